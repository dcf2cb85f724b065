"""The storm's cloud: networks (half routed), instances through the control API, guests plugged."""

from __future__ import annotations

import base64
import ipaddress
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from metastack.bench.plumbing import Addressing, Plug
from metastack.demo.run import DEMO_KEY

Progress = Callable[[str], None]
# One control API call: (method, path, body=None, timeout=...) -> the decoded answer.
Call = Callable[..., Any]
CIDR = ipaddress.ip_network("10.0.0.0/20")  # the same in every network: addresses overlap
GATEWAY = "10.0.0.1"
FIRST_GUEST = 10  # host offset of a network's first guest
PER_BRIDGE = 1000  # a Linux bridge takes 1,024 ports; DHCP and router ports need some
GUESTS_PER_NETWORK = 250
CREATE_PARALLEL = 8


def default_networks(instances: int, network_nodes: int = 1) -> int:
    """ceil(N/250), at least 2 (one routed, one isolated) per network node, so that every
    node gets a router."""
    return max(2 * network_nodes, math.ceil(instances / GUESTS_PER_NETWORK))


@dataclass(frozen=True)
class DhcpPort:
    """One DHCP port of a network: one per network node serving it."""

    id: str
    ip: str
    mac: str
    device_id: str  # `dhcp-<host>`: the network node that owns it


@dataclass
class Net:
    """One storm network: its ids and the ports that serve its guests' metadata."""

    index: int
    id: str
    project: str
    router_id: str | None = None
    dhcp_ports: list[DhcpPort] = field(default_factory=list)  # by device id
    router_mac: str = ""
    router_port: str = ""

    @property
    def routed(self) -> bool:
        """Whether guests reach metadata through the router (else the DHCP namespace)."""
        return self.router_id is not None

    def metadata_hops(self) -> set[str]:
        """Where a guest's route to 169.254.169.254 may point: the router, or any of the
        network's DHCP ports (each network node's dnsmasq names its own)."""
        return {GATEWAY} if self.routed else {p.ip for p in self.dhcp_ports}

    def routes(self, slot: int) -> tuple[tuple[str, str], ...]:
        """The routes of the network's `slot`-th guest, as option 121 gives them: metadata
        /32, then the default route. Guests of an isolated network served by several
        nodes take their DHCP ports in turn, so every node's proxy serves some."""
        hop = GATEWAY if self.routed else self.dhcp_ports[slot % len(self.dhcp_ports)].ip
        return (("169.254.169.254/32", hop), ("0.0.0.0/0", GATEWAY))

    def macs(self) -> dict[str, str]:
        """Next hop -> MAC, for the guests' permanent neighbour entries."""
        found = {p.ip: p.mac for p in self.dhcp_ports}
        if self.routed:
            found[GATEWAY] = self.router_mac
        return found


@dataclass
class Member:
    """One storm guest: its instance, network and port."""

    index: int
    net: Net
    uuid: str
    ip: str
    mac: str = ""
    net_count: int = 1  # networks the guests are spread over, round robin

    @property
    def slot(self) -> int:
        """Its place among its network's guests."""
        return self.index // self.net_count


def guest_ip(slot: int) -> str:
    """The fixed IP of the `slot`-th guest of a network."""
    return str(CIDR.network_address + FIRST_GUEST + slot)


def create_networks(call: Call, count: int, progress: Progress) -> list[Net]:
    """`count` projects, one network each, the even ones behind a router."""
    progress(f"creating {count} networks ({(count + 1) // 2} routed, {count // 2} isolated)")
    nets = []
    for index in range(count):
        project = f"bench-{index}"
        call("POST", "/v1/projects", {"id": project, "name": project})
        network = call(
            "POST", "/v1/networks", {"name": f"storm-{index}", "project_id": project, "mtu": 1450}
        )
        subnet = call(
            "POST",
            "/v1/subnets",
            {
                "network_id": network["id"],
                "cidr": str(CIDR),
                "ip_version": 4,
                "gateway_ip": GATEWAY,
            },
        )
        net = Net(index, network["id"], project)
        if index % 2 == 0:
            router = call("POST", "/v1/routers", {"name": f"storm-{index}", "project_id": project})
            call("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]})
            net.router_id = router["id"]
        nets.append(net)
    return nets


def read_ports(call: Call, nets: list[Net]) -> dict[str, dict[str, Any]]:
    """Fill in each network's DHCP and router ports; every port by device id."""
    by_device: dict[str, dict[str, Any]] = {}
    for net in nets:
        dhcp = []
        for port in call("GET", f"/v1/ports?network_id={net.id}")["ports"]:
            owner = port.get("device_owner", "")
            ip = port["fixed_ips"][0]["ip_address"] if port.get("fixed_ips") else ""
            if owner == "network:dhcp":
                dhcp.append(DhcpPort(port["id"], ip, port["mac_address"], port["device_id"]))
            elif owner.startswith("network:router_interface"):
                net.router_mac, net.router_port = port["mac_address"], port["id"]
            elif port.get("device_id"):
                by_device[port["device_id"]] = port
        net.dhcp_ports = sorted(dhcp, key=lambda p: p.device_id)
    return by_device


def create_instances(call: Call, nets: list[Net], count: int, progress: Progress) -> list[Member]:
    """`count` instances round-robin over the networks, created in parallel."""
    progress(f"creating {count} instances through the control API ({CREATE_PARALLEL} at a time)")

    def one(index: int) -> Member:
        net = nets[index % len(nets)]
        ip = guest_ip(index // len(nets))
        user_data = f"#cloud-config\nhostname: storm-{index}\n"
        instance = call(
            "POST",
            "/v1/instances",
            {
                "name": f"storm-{index}",
                "project_id": net.project,
                "networks": [{"network_id": net.id, "ip_address": ip}],
                "key_name": "storm",
                "public_key": DEMO_KEY,
                "user_data": base64.b64encode(user_data.encode()).decode(),
                "metadata": {"bench": "bootstorm"},
            },
            timeout=60.0,
        )
        return Member(index, net, instance["uuid"], ip, net_count=len(nets))

    with ThreadPoolExecutor(max_workers=CREATE_PARALLEL) as pool:
        members = list(pool.map(one, range(count)))
    ports = read_ports(call, nets)
    for member in members:
        member.mac = ports[member.uuid]["mac_address"]
    return members


def plugs(members: list[Member], prefix: str, bridge: Callable[[str], str]) -> list[Plug]:
    """The guest namespaces to create, in member order."""
    return [
        Plug(f"{prefix}g{m.index}", f"g{m.index}", bridge(m.net.id), m.mac, m.ip) for m in members
    ]


def check_dhcp(seen: dict[str, tuple[str, Addressing]], members: dict[str, Member]) -> list[str]:
    """What differs between what DHCP gave the sample guests and what the plan expects."""
    problems = []
    for netns, (ip, given) in seen.items():
        member = members[netns]
        routes = dict(given.routes)
        if ip != member.ip:
            problems.append(f"{netns}: DHCP gave {ip or 'no address'}, expected {member.ip}")
        elif (
            len(given.routes) != 2
            or routes.get("169.254.169.254/32") not in member.net.metadata_hops()
            or routes.get("0.0.0.0/0") != GATEWAY
        ):
            problems.append(f"{netns}: DHCP routes {given.routes}")
    return problems
