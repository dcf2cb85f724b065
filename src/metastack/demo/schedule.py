"""Which network node serves which network and router in the multi-node demo (pure).

Until the control API schedules networks and routers itself, the demo gives each network
node's netagent static `networks`/`routers` lists: every network to two nodes (two
dnsmasqs answer the same static leases; isolated networks get metadata from both), every
router to one node only (two routers holding the same gateway address on one segment
would conflict until VRRP moves it between them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DHCP_AGENTS_PER_NETWORK = 2
L3_AGENTS_PER_ROUTER = 1
# An id no network or router has. The netagent reads an empty list as "all of them", so a
# node with nothing of a kind scheduled to it is given this one instead.
NOTHING = "none"


@dataclass(frozen=True)
class Serves:
    """The ids scheduled to one node."""

    networks: list[str] = field(default_factory=list)
    routers: list[str] = field(default_factory=list)


def schedule(
    networks: Sequence[str],
    routers: Sequence[str],
    nodes: Sequence[str],
    per_network: int = DHCP_AGENTS_PER_NETWORK,
    per_router: int = L3_AGENTS_PER_ROUTER,
) -> dict[str, Serves]:
    """Round robin: network k goes to nodes k, k+1, ... (`per_network` of them, at most
    every node), router r to nodes r, r+1, ... (`per_router`); node -> what it serves."""
    if not nodes:
        return {}
    served: dict[str, Serves] = {node: Serves() for node in nodes}
    for items, per, kind in ((networks, per_network, "networks"), (routers, per_router, "routers")):
        for index, item in enumerate(items):
            for offset in range(min(per, len(nodes))):
                node = nodes[(index + offset) % len(nodes)]
                getattr(served[node], kind).append(item)
    return served


def netagent_lists(serves: Serves) -> tuple[list[str], list[str]]:
    """The netagent's `networks` and `routers` settings for what a node serves."""
    return (serves.networks or [NOTHING], serves.routers or [NOTHING])
