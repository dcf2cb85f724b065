"""`network_data.json`: links, networks and DNS services, following nova's netutils."""

from __future__ import annotations

import ipaddress
from typing import Final

from metastack.metadata.model import Instance, Subnet, Vif

# VIF types nova exposes as the link type; any other type is shown as "phy".
_EXPOSED_VIF_TYPES: Final = frozenset(
    {"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif"}
)

JsonObject = dict[str, object]


def network_data(instance: Instance) -> JsonObject:
    """The network_data.json object; `{}` when the instance has no VIFs."""
    if not instance.vifs:
        return {}
    links: list[JsonObject] = []
    networks: list[JsonObject] = []
    services: list[JsonObject] = []
    link_number = -1
    network_number = -1
    for vif in instance.vifs:
        if not vif.subnets:
            continue
        link_number += 1
        link = _link(vif, link_number)
        links.append(link)
        # Like nova, only the first IPv4 and the first IPv6 subnet of a VIF count.
        for version in (4, 6):
            subnet = next((s for s in vif.subnets if s.ip_version == version), None)
            if subnet is None:
                continue
            address = _first_address(vif, subnet)
            if address is None:
                continue
            network_number += 1
            networks.append(_network(vif, subnet, address, network_number, str(link["id"])))
            for dns in _dns_services(subnet):
                if dns not in services:
                    services.append(dns)
    return {"links": links, "networks": networks, "services": services}


def _link(vif: Vif, number: int) -> JsonObject:
    vif_type = vif.port.vif_type
    return {
        "id": vif.port.device_name or f"interface{number}",
        "vif_id": vif.port.id,
        "type": vif_type if vif_type in _EXPOSED_VIF_TYPES else "phy",
        "mtu": None if _dhcp_serves_mtu(vif) else vif.network.mtu,
        "ethernet_mac_address": vif.port.mac_address.lower(),
    }


def _dhcp_serves_mtu(vif: Vif) -> bool:
    # nova nulls the MTU when a subnet of the VIF has a DHCP server, since DHCP
    # hands the MTU out; a DHCP port only holds addresses on DHCP-enabled subnets.
    return vif.network_has_dhcp_port and any(s.enable_dhcp for s in vif.subnets)


def _first_address(vif: Vif, subnet: Subnet) -> str | None:
    for fixed_ip in vif.port.fixed_ips:
        if fixed_ip.subnet_id == subnet.id:
            return fixed_ip.ip_address
    return None


def _network(vif: Vif, subnet: Subnet, address: str, number: int, link_id: str) -> JsonObject:
    version = subnet.ip_version
    suffix = ""
    if subnet.ipv6_address_mode is not None:
        suffix = "_" + subnet.ipv6_address_mode
    elif subnet.enable_dhcp:
        return {
            "id": f"network{number}",
            "type": f"ipv{version}_dhcp",
            "link": link_id,
            "network_id": vif.network.id,
        }
    routes = _default_route(subnet)
    for route in subnet.host_routes:
        network, netmask = _network_and_mask(route.destination)
        routes.append({"network": network, "netmask": netmask, "gateway": route.nexthop})
    return {
        "id": f"network{number}",
        "type": f"ipv{version}{suffix}",
        "link": link_id,
        "ip_address": address,
        "netmask": _network_and_mask(subnet.cidr)[1],
        "routes": routes,
        "network_id": vif.network.id,
        "services": _dns_services(subnet),
    }


def _default_route(subnet: Subnet) -> list[JsonObject]:
    if not subnet.gateway_ip:
        return []
    any_address = "0.0.0.0" if subnet.ip_version == 4 else "::"
    return [{"network": any_address, "netmask": any_address, "gateway": subnet.gateway_ip}]


def _network_and_mask(cidr: str) -> tuple[str | None, str | None]:
    """Network address and netmask of a CIDR (v6 masks like `ffff:ffff:ffff:ffff::`)."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        # The store validates CIDRs; a bad one renders as null rather than failing the file.
        return None, None
    return str(net.network_address), str(net.netmask)


def _dns_services(subnet: Subnet) -> list[JsonObject]:
    return [{"type": "dns", "address": address} for address in subnet.dns_nameservers]
