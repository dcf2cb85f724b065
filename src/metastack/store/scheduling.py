"""Which agents serve which networks (DHCP) and routers (L3): pure decisions, as neutron's
schedulers make them (least loaded first, dead agents replaced, never more than asked).

The store loads agents and bindings, calls :func:`plan` under its scheduling lock, and
applies the moves it returns; nothing here touches the database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Capability = Literal["dhcp", "l3", "metadata"]
CAPABILITIES: tuple[Capability, ...] = ("dhcp", "l3", "metadata")
VRID_MIN, VRID_MAX = 1, 255  # VRRP virtual router ids


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    """neutron's options: agents per network and router, when an agent is dead, failover."""

    dhcp_agents_per_network: int = 1
    max_l3_agents_per_router: int = 1
    agent_down_time: float = 75.0
    allow_automatic_dhcp_failover: bool = True
    allow_automatic_l3agent_failover: bool = True

    @property
    def ha_routers(self) -> bool:
        """New routers are HA (VRRP on several L3 agents) when more than one may serve it."""
        return self.max_l3_agents_per_router >= 2

    def alive(self, heartbeat_at: datetime, now: datetime) -> bool:
        """An agent is alive while its last report is at most `agent_down_time` old."""
        return now - heartbeat_at <= timedelta(seconds=self.agent_down_time)


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as the scheduler sees it."""

    id: str
    host: str
    capabilities: frozenset[str]
    alive: bool


@dataclass(frozen=True, slots=True)
class Bound:
    """One binding: `agent_id` serves the object, in slot `index` (1, 2, ...)."""

    agent_id: str
    index: int


@dataclass(frozen=True, slots=True)
class Move:
    """Add or remove the binding of `target` (a network or router id) to `agent_id`."""

    action: Literal["add", "remove"]
    target: str
    agent_id: str
    index: int


def loads(bindings: Mapping[str, Sequence[Bound]]) -> Counter[str]:
    """How many objects each agent serves."""
    return Counter(bound.agent_id for bounds in bindings.values() for bound in bounds)


def plan(
    wanted: Mapping[str, int],
    bindings: Mapping[str, Sequence[Bound]],
    agents: Sequence[AgentInfo],
    capability: Capability,
    *,
    failover: bool,
    load: Counter[str] | None = None,
) -> list[Move]:
    """The moves that give each object in `wanted` its number of agents with `capability`.

    `bindings` holds the current bindings of the objects in `wanted`; `load` counts the
    objects each agent serves (default: counted from `bindings`). New bindings go to the
    least loaded live capable agents (ties: by host). Bindings on agents that lost the
    capability are removed. With `failover`, bindings on dead agents are replaced by live
    ones and removed, but kept where no live agent can take their place; without it they
    keep their slot. An object never ends with more bindings than wanted: extras go, dead
    ones first, then the most loaded.
    """
    by_id = {agent.id: agent for agent in agents}
    load = Counter(load) if load is not None else loads(bindings)
    moves: list[Move] = []
    for target in sorted(wanted):
        moves += _plan_one(
            target, wanted[target], bindings.get(target, ()), by_id, capability, load, failover
        )
    return moves


def _plan_one(
    target: str,
    count: int,
    current: Sequence[Bound],
    by_id: Mapping[str, AgentInfo],
    capability: str,
    load: Counter[str],
    failover: bool,
) -> list[Move]:
    def capable(bound: Bound) -> bool:
        agent = by_id.get(bound.agent_id)
        return agent is not None and capability in agent.capabilities

    unfit = [b for b in current if not capable(b)]
    live = [b for b in current if capable(b) and by_id[b.agent_id].alive]
    dead = sorted((b for b in current if capable(b) and not by_id[b.agent_id].alive), key=_slot)
    removed = list(unfit)
    live.sort(key=lambda b: (load[b.agent_id], b.index))
    removed += live[count:]  # more than wanted: the most loaded go
    live = live[:count]
    bound_agents = {b.agent_id for b in current}
    candidates = sorted(
        (
            agent
            for agent in by_id.values()
            if agent.alive and capability in agent.capabilities and agent.id not in bound_agents
        ),
        key=lambda agent: (load[agent.id], agent.host, agent.id),
    )
    if failover:
        added = candidates[: max(0, count - len(live))]
        keep_dead = max(0, count - len(live) - len(added))
    else:
        keep_dead = max(0, count - len(live))
        added = candidates[: max(0, count - len(live) - len(dead))]
    removed += dead[keep_dead:]
    kept = live + dead[:keep_dead]
    used = {b.index for b in kept}
    free = (index for index in range(1, count + len(current) + 2) if index not in used)
    moves = [Move("remove", target, b.agent_id, b.index) for b in sorted(removed, key=_slot)]
    moves += [Move("add", target, agent.id, next(free)) for agent in added]
    for move in moves:
        load[move.agent_id] += 1 if move.action == "add" else -1
    return moves


def _slot(bound: Bound) -> int:
    return bound.index


def free_vrid(used: set[int]) -> int | None:
    """The lowest VRRP id (1-255) not in `used`, None when all are taken."""
    return next((vrid for vrid in range(VRID_MIN, VRID_MAX + 1) if vrid not in used), None)
