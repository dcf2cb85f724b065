"""The control API's networks, subnets, ports and routers, as the netagent sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metastack.client.http import ControlApiError, ControlClient
from metastack.netagent.config import NetagentConfig

DHCP_OWNER = "network:dhcp"
ROUTER_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:ha_router_replicated_interface",
        "network:router_interface_distributed",
    }
)


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    enable_dhcp: bool = True
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination, nexthop)


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[tuple[str, str], ...]  # (subnet id, address)
    device_id: str = ""
    device_owner: str = ""


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    mtu: int
    subnets: tuple[Subnet, ...]
    ports: tuple[Port, ...]


@dataclass(frozen=True, slots=True)
class RouterInterface:
    subnet_id: str
    network_id: str
    port_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class Router:
    id: str
    interfaces: tuple[RouterInterface, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    """What this host serves: `dhcp_networks` get a DHCP namespace; `networks` also holds
    the networks that only a served router is attached to."""

    networks: dict[str, Network] = field(default_factory=dict)
    routers: dict[str, Router] = field(default_factory=dict)
    dhcp_networks: frozenset[str] = frozenset()


def subnet_from(doc: dict[str, Any]) -> Subnet:
    """A subnet from its control API document."""
    return Subnet(
        id=doc["id"],
        network_id=doc["network_id"],
        cidr=doc["cidr"],
        ip_version=int(doc["ip_version"]),
        gateway_ip=doc.get("gateway_ip"),
        enable_dhcp=bool(doc.get("enable_dhcp", True)),
        dns_nameservers=tuple(doc.get("dns_nameservers", ())),
        host_routes=tuple((r["destination"], r["nexthop"]) for r in doc.get("host_routes", ())),
    )


def port_from(doc: dict[str, Any]) -> Port:
    """A port from its control API document."""
    return Port(
        id=doc["id"],
        network_id=doc["network_id"],
        mac_address=doc["mac_address"],
        fixed_ips=tuple((ip["subnet_id"], ip["ip_address"]) for ip in doc.get("fixed_ips", ())),
        device_id=doc.get("device_id", ""),
        device_owner=doc.get("device_owner", ""),
    )


def router_from(doc: dict[str, Any]) -> Router:
    """A router from its control API document."""
    return Router(
        id=doc["id"],
        interfaces=tuple(
            RouterInterface(i["subnet_id"], i["network_id"], i["port_id"], i["ip_address"])
            for i in doc.get("interfaces", ())
        ),
    )


def dhcp_subnets(network: Network) -> list[Subnet]:
    """The subnets of a network with DHCP enabled, in API order."""
    return [subnet for subnet in network.subnets if subnet.enable_dhcp]


def dhcp_port(network: Network, device_id: str) -> Port | None:
    """This host's DHCP port on a network, if it exists."""
    for port in network.ports:
        if port.device_owner == DHCP_OWNER and port.device_id == device_id:
            return port
    return None


# Ids per filtered list call: 100 uuids keep the query well under the 8 KiB request line.
IDS_PER_CALL = 100


async def _list_by_ids(
    client: ControlClient, resource: str, key: str, ids: list[str]
) -> list[dict[str, Any]]:
    """`client.list(resource, key=ids)` in chunks, so any number of ids fits in URLs."""
    docs: list[dict[str, Any]] = []
    for start in range(0, len(ids), IDS_PER_CALL):
        docs += await client.list(resource, **{key: ids[start : start + IDS_PER_CALL]})
    return docs


class UnknownAgent(ControlApiError):
    """The control API has no agent for this host (never registered, or deleted)."""

    def __init__(self, host: str) -> None:
        super().__init__(404, f"no agent record for host {host!r}; it reports its state again")


async def served_ids(client: ControlClient, config: NetagentConfig) -> tuple[list[str], list[str]]:
    """The ids of the networks (DHCP) and routers this host serves: the static lists where
    set, else what the control API schedules to this host's agent; UnknownAgent when the
    control API knows no agent of this host (a missing record is no order to tear down)."""
    networks, routers = list(config.networks), list(config.routers)
    if networks and routers:
        return networks, routers
    agents = await client.list("agents", host=config.host)
    if not agents:
        raise UnknownAgent(config.host)
    agent: dict[str, Any] = agents[0]
    return (
        networks or list(agent.get("networks", ())),
        routers or list(agent.get("routers", ())),
    )


async def fetch_topology(client: ControlClient, config: NetagentConfig) -> Topology:
    """Read everything this host serves from the control API (a handful of list calls)."""
    network_ids, router_ids = await served_ids(client, config)
    network_docs = await _list_by_ids(client, "networks", "id", network_ids)
    dhcp_ids = {doc["id"] for doc in network_docs}
    routers = [router_from(doc) for doc in await _list_by_ids(client, "routers", "id", router_ids)]
    extra = {i.network_id for r in routers for i in r.interfaces} - dhcp_ids
    if extra:
        network_docs += await _list_by_ids(client, "networks", "id", sorted(extra))
    ids = sorted({doc["id"] for doc in network_docs})
    subnets: dict[str, list[Subnet]] = {i: [] for i in ids}
    ports: dict[str, list[Port]] = {i: [] for i in ids}
    if ids:
        for doc in await _list_by_ids(client, "subnets", "network_id", ids):
            subnets.setdefault(doc["network_id"], []).append(subnet_from(doc))
        for doc in await _list_by_ids(client, "ports", "network_id", ids):
            ports.setdefault(doc["network_id"], []).append(port_from(doc))
    networks = {
        doc["id"]: Network(
            doc["id"], int(doc.get("mtu", 1500)), tuple(subnets[doc["id"]]), tuple(ports[doc["id"]])
        )
        for doc in network_docs
    }
    return Topology(networks, {r.id: r for r in routers}, frozenset(dhcp_ids))


async def ensure_dhcp_ports(
    client: ControlClient, topology: Topology, config: NetagentConfig
) -> bool:
    """Create or complete this host's DHCP port on each served network (one fixed IP per
    DHCP subnet); delete it where no subnet has DHCP. True if anything was written."""
    wrote = False
    for network_id in sorted(topology.dhcp_networks):
        network = topology.networks[network_id]
        subnets = dhcp_subnets(network)
        port = dhcp_port(network, config.dhcp_device_id)
        if not subnets:
            if port is not None:
                await client.delete("ports", port.id)
                wrote = True
            continue
        if port is None:
            await client.create(
                "ports",
                {
                    "network_id": network_id,
                    "device_owner": DHCP_OWNER,
                    "device_id": config.dhcp_device_id,
                    "fixed_ips": [{"subnet_id": s.id} for s in subnets],
                },
            )
            wrote = True
            continue
        held = {subnet_id for subnet_id, _ in port.fixed_ips}
        missing = [s.id for s in subnets if s.id not in held]
        if missing:
            fixed = [{"subnet_id": s, "ip_address": ip} for s, ip in port.fixed_ips]
            fixed += [{"subnet_id": s} for s in missing]
            await client.update("ports", port.id, {"fixed_ips": fixed})
            wrote = True
    return wrote
