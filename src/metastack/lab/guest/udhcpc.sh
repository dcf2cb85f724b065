#!/bin/sh
# busybox udhcpc script of a lab guest: sets the address, the MTU and the routes DHCP gave
# (option 121 classless static routes, else the router); never touches /etc/resolv.conf.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        ip route replace "$1" via "$2" dev "$interface"
        shift 2
      done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
