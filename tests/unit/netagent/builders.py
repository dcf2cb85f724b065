"""Small topology builders for the netagent unit tests."""

from __future__ import annotations

from typing import Any

from metastack.netagent.config import NetagentConfig
from metastack.netagent.topology import Network, Port, Router, RouterInterface, Subnet, Topology

NET = "11111111-1111-4111-8111-111111111111"
SUB = "22222222-2222-4222-8222-222222222222"
SUB6 = "23232323-2323-4232-8232-232323232323"
ROUTER = "33333333-3333-4333-8333-333333333333"
DHCP_PORT = "44444444-4444-4444-8444-444444444444"
ROUTER_PORT = "55555555-5555-4555-8555-555555555555"
VM_PORT = "66666666-6666-4666-8666-666666666666"


def config(**fields: Any) -> NetagentConfig:
    """A config with a test prefix and a fixed host name."""
    return NetagentConfig.model_validate(
        {"host": "node1", "namespace_prefix": "ms-t-", "fabric_netns": "ms-t-fabric", **fields}
    )


def subnet(**fields: Any) -> Subnet:
    values: dict[str, Any] = {
        "id": SUB,
        "network_id": NET,
        "cidr": "10.0.0.0/24",
        "ip_version": 4,
        "gateway_ip": "10.0.0.1",
    }
    return Subnet(**{**values, **fields})


def dhcp_port(*ips: tuple[str, str]) -> Port:
    return Port(
        DHCP_PORT,
        NET,
        "fa:16:3e:00:00:02",
        ips or ((SUB, "10.0.0.2"),),
        "dhcp-node1",
        "network:dhcp",
    )


def vm_port(ip: str = "10.0.0.5", mac: str = "fa:16:3e:00:00:05") -> Port:
    return Port(VM_PORT, NET, mac, ((SUB, ip),), "vm-uuid", "compute:nova")


def router_port(ip: str = "10.0.0.1", subnet_id: str = SUB) -> Port:
    return Port(
        ROUTER_PORT,
        NET,
        "fa:16:3e:00:00:01",
        ((subnet_id, ip),),
        ROUTER,
        "network:router_interface",
    )


def network(
    subnets: tuple[Subnet, ...] | None = None, ports: tuple[Port, ...] = (), mtu: int = 1450
) -> Network:
    return Network(NET, mtu, subnets if subnets is not None else (subnet(),), ports)


def topology(net: Network, routed: bool = False) -> Topology:
    routers = {}
    if routed:
        routers[ROUTER] = Router(ROUTER, (RouterInterface(SUB, NET, ROUTER_PORT, "10.0.0.1"),))
    return Topology({net.id: net}, routers, frozenset({net.id}))
