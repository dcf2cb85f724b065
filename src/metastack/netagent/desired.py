"""Desired state, purely from control-API objects, by the dhcp/l3 agents' rules.

The rules: docs/wire-contracts.md#reaching-the-metadata-address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from metastack.netagent.config import NetagentConfig
from metastack.netagent.topology import (
    ROUTER_OWNERS,
    Network,
    Port,
    Router,
    Subnet,
    Topology,
    dhcp_port,
    dhcp_subnets,
)
from metastack.netns.dnsmasq import DhcpHost, DhcpOption, DhcpRange, DnsmasqConfig
from metastack.netns.inspect import RouteState
from metastack.netns.plan import FirewallRule, metadata_redirect_rules

METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fe80::a9fe:a9fe"
METADATA_CIDR = f"{METADATA_V4}/32"
ANY_V4 = "0.0.0.0/0"


@dataclass(frozen=True, slots=True)
class PortLink:
    """A veth: `name` inside the namespace, `peer` on `bridge` in the fabric namespace."""

    name: str
    peer: str
    bridge: str
    mac: str
    mtu: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NamespaceSpec:
    """One qdhcp/qrouter namespace; `rules` None leaves its firewall alone."""

    name: str
    links: tuple[PortLink, ...]
    routes: tuple[RouteState, ...] = ()
    rules: tuple[FirewallRule, ...] | None = None
    sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Listener:
    """A proxy listener as the proxy's control API spells it."""

    netns: str
    host: str
    port: int
    network_id: str | None = None
    router_id: str | None = None
    interface: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec document of PUT /listeners."""
        doc: dict[str, Any] = {"netns": self.netns, "host": self.host, "port": self.port}
        for key in ("network_id", "router_id", "interface"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Listener:
        """A listener from GET /listeners."""
        return cls(
            doc.get("netns") or "",
            str(doc["host"]),
            int(doc["port"]),
            doc.get("network_id"),
            doc.get("router_id"),
            doc.get("interface"),
        )


@dataclass(frozen=True, slots=True)
class Desired:
    fabric: str
    bridges: tuple[str, ...] = ()
    namespaces: dict[str, NamespaceSpec] = field(default_factory=dict)
    dhcp: dict[str, DnsmasqConfig] = field(default_factory=dict)  # by network id
    listeners: tuple[Listener, ...] = ()


def isolated_subnets(network: Network) -> dict[str, bool]:
    """Subnet id -> True unless a router interface port holds the subnet's gateway IP."""
    routed = {
        (subnet_id, address)
        for port in network.ports
        if port.device_owner in ROUTER_OWNERS
        for subnet_id, address in port.fixed_ips
    }
    return {s.id: (s.id, s.gateway_ip) not in routed for s in network.subnets}


def serves_metadata(network: Network, config: NetagentConfig) -> bool:
    """Whether the DHCP namespace runs a metadata listener (the dhcp agent's rule).

    The rule: docs/wire-contracts.md#when-a-dhcp-namespace-serves-metadata.
    """
    subnets = dhcp_subnets(network)
    if not subnets:
        return False
    if config.force_metadata:
        return True
    if not config.enable_isolated_metadata:
        return False
    isolated = isolated_subnets(network)
    return any(isolated[s.id] for s in subnets)


def _gateway(subnet: Subnet) -> str | None:
    """The gateway, or a 0.0.0.0/0 host route's next hop when the subnet has none."""
    if subnet.gateway_ip:
        return subnet.gateway_ip
    return next((hop for dest, hop in subnet.host_routes if dest == ANY_V4), None)


def metadata_next_hop(
    subnet: Subnet, isolated: bool, dhcp_ip: str | None, config: NetagentConfig
) -> str | None:
    """Next hop of the 169.254.169.254/32 route pushed to guests of a subnet.

    The rule: docs/wire-contracts.md#dhcp-option-121.
    """
    if config.force_metadata or (isolated and config.enable_isolated_metadata):
        return dhcp_ip
    gateway = _gateway(subnet)
    if not isolated and gateway:
        return gateway
    return None


def classless_routes(
    subnet: Subnet, network: Network, isolated: bool, dhcp_ip: str | None, config: NetagentConfig
) -> list[tuple[str, str]]:
    """Option 121/249 routes: on-link other IPv4 subnets, host routes, the metadata route,
    then the default route via the gateway whenever anything is pushed."""
    routes = [
        (other.cidr, "0.0.0.0")
        for other in network.subnets
        if other.ip_version == 4 and other.id != subnet.id
    ]
    routes += [(dest, hop) for dest, hop in subnet.host_routes if dest != ANY_V4]
    hop = metadata_next_hop(subnet, isolated, dhcp_ip, config)
    if hop:
        routes.append((METADATA_CIDR, hop))
    gateway = _gateway(subnet)
    if routes and gateway:
        routes.append((ANY_V4, gateway))
    return routes


def subnet_options(
    subnet: Subnet, network: Network, isolated: bool, dhcp_ip: str | None, config: NetagentConfig
) -> list[DhcpOption]:
    """dnsmasq options of one IPv4 subnet: static routes (121 and 249), router, DNS, MTU."""
    tag = f"subnet-{subnet.id}"
    options: list[DhcpOption] = []
    routes = classless_routes(subnet, network, isolated, dhcp_ip, config)
    if routes:
        flat = tuple(part for route in routes for part in route)
        options.append(DhcpOption(tag, "option:classless-static-route", flat))
        options.append(DhcpOption(tag, "249", flat))
    gateway = _gateway(subnet)
    options.append(DhcpOption(tag, "option:router", (gateway,) if gateway else ()))
    if subnet.dns_nameservers:
        options.append(DhcpOption(tag, "option:dns-server", subnet.dns_nameservers))
    options.append(DhcpOption(tag, "option:mtu", (str(network.mtu),)))
    return options


def hostname(ip: str) -> str:
    """Upstream's default host name of a port: `host-10-0-0-5`."""
    return "host-" + ip.replace(".", "-").replace(":", "-")


def _cidr(address: str, subnet: Subnet) -> str:
    return f"{address}/{ipaddress.ip_network(subnet.cidr).prefixlen}"


def _ifname(prefix: str, port: Port) -> str:
    return f"{prefix}{port.id[:11]}"


def dhcp_namespace(
    network: Network, port: Port, config: NetagentConfig
) -> tuple[NamespaceSpec, DnsmasqConfig, list[Listener]]:
    """The qdhcp namespace of a network, its dnsmasq and its metadata listeners."""
    netns = config.dhcp_netns(network.id)
    subnets = {s.id: s for s in network.subnets}
    served = {s.id for s in dhcp_subnets(network)}
    mine = {sid: ip for sid, ip in port.fixed_ips if sid in subnets}
    addresses = [_cidr(ip, subnets[sid]) for sid, ip in mine.items()]
    has_v6 = any(s.ip_version == 6 for s in network.subnets)
    if config.force_metadata or config.enable_isolated_metadata:
        addresses.append(METADATA_CIDR)
        if has_v6:
            addresses.append(f"{METADATA_V6}/128")
    link = PortLink(
        _ifname("ns-", port),
        _ifname("tap", port),
        config.bridge_name(network.id),
        port.mac_address,
        network.mtu,
        tuple(addresses),
    )
    v4 = [s for s in network.subnets if s.ip_version == 4 and s.id in served and s.id in mine]
    routes = tuple(
        RouteState("default", gw, link.name) for gw in [_gateway(s) for s in v4][:1] if gw
    )
    isolated = isolated_subnets(network)
    options = [
        o for s in v4 for o in subnet_options(s, network, isolated[s.id], mine[s.id], config)
    ]
    v4_ids = {s.id for s in v4}
    hosts = sorted(
        {
            DhcpHost(p.mac_address, hostname(ip), ip)
            for p in network.ports
            if not p.device_owner.startswith("network:")
            for sid, ip in p.fixed_ips
            if sid in v4_ids
        },
        key=lambda h: (ipaddress.ip_address(h.ip), h.mac),
    )
    dnsmasq = DnsmasqConfig(
        netns=netns,
        interface=link.name,
        ranges=tuple(DhcpRange(f"subnet-{s.id}", s.cidr) for s in v4),
        hosts=tuple(hosts),
        options=tuple(options),
        lease_duration=config.dhcp_lease_duration,
        lease_max=config.dnsmasq_lease_max,
    )
    listeners = []
    if serves_metadata(network, config):
        listeners.append(Listener(netns, METADATA_V4, 80, network_id=network.id))
        if has_v6:
            listeners.append(
                Listener(netns, METADATA_V6, 80, network_id=network.id, interface=link.name)
            )
    return NamespaceSpec(netns, (link,), routes), dnsmasq, listeners


def router_namespace(
    router: Router, topology: Topology, config: NetagentConfig
) -> tuple[NamespaceSpec, list[Listener]]:
    """The qrouter namespace: a `qr-` port per interface, the metadata redirect, a listener."""
    netns = config.router_netns(router.id)
    links = []
    for iface in router.interfaces:
        network = topology.networks.get(iface.network_id)
        if network is None:
            continue
        port = next((p for p in network.ports if p.id == iface.port_id), None)
        subnet = next((s for s in network.subnets if s.id == iface.subnet_id), None)
        if port is None or subnet is None:
            continue  # the API changed under us; the next pass sees it whole
        links.append(
            PortLink(
                _ifname("qr-", port),
                _ifname("tap", port),
                config.bridge_name(network.id),
                port.mac_address,
                network.mtu,
                (_cidr(iface.ip_address, subnet),),
            )
        )
    rules: tuple[FirewallRule, ...] = ()
    listeners = []
    if config.enable_metadata_proxy:
        mark = f"{config.metadata_access_mark}/0xffff"
        rules = tuple(metadata_redirect_rules(netns, config.metadata_port, mark))
        listeners.append(Listener(netns, "0.0.0.0", config.metadata_port, router_id=router.id))
    spec = NamespaceSpec(netns, tuple(links), (), rules, sysctls=(("net.ipv4.ip_forward", "1"),))
    return spec, listeners


def desired_state(topology: Topology, config: NetagentConfig) -> Desired:
    """Everything this host should have for `topology`."""
    namespaces: dict[str, NamespaceSpec] = {}
    dhcp: dict[str, DnsmasqConfig] = {}
    listeners: list[Listener] = []
    for network_id in sorted(topology.dhcp_networks):
        network = topology.networks[network_id]
        port = dhcp_port(network, config.dhcp_device_id)
        if port is None or not dhcp_subnets(network):
            continue
        spec, dnsmasq, served = dhcp_namespace(network, port, config)
        namespaces[spec.name] = spec
        if dnsmasq.ranges:
            dhcp[network_id] = dnsmasq
        listeners += served
    for router_id in sorted(topology.routers):
        spec, served = router_namespace(topology.routers[router_id], topology, config)
        namespaces[spec.name] = spec
        listeners += served
    # Served networks get their bridge even without DHCP, so guests can always be plugged in.
    bridges = sorted(
        {link.bridge for ns in namespaces.values() for link in ns.links}
        | {config.bridge_name(network_id) for network_id in topology.dhcp_networks}
    )
    return Desired(config.fabric_netns, tuple(bridges), namespaces, dhcp, tuple(listeners))
