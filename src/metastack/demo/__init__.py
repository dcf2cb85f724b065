"""`metastack demo`: the whole system on one machine, guests booting by DHCP and cloud-init."""
