"""Agents and their bindings: state reports, views, and the scheduler's database side.

Every scheduling write runs in one transaction under the scheduling lock (the revision
counter row every write locks first, plus a transaction-level advisory lock on PostgreSQL;
the write transaction itself on SQLite), so API processes on any number of nodes never
schedule the same object twice. A binding change is recorded as an update of its network
or router, which the netagents follow on the change feed.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from metastack.errors import NotFound
from metastack.store.base import Resource
from metastack.store.ports import delete_port
from metastack.store.scheduling import (
    AgentInfo,
    Bound,
    Move,
    SchedulingPolicy,
    plan,
)
from metastack.store.schema import (
    AgentRow,
    DhcpBindingRow,
    L3BindingRow,
    NetworkRow,
    PortRow,
    RouterRow,
)
from metastack.store.specs import AgentReport
from metastack.store.tx import Tx
from metastack.store.views import AgentView

# Key of PostgreSQL's pg_advisory_xact_lock for scheduling ("metastack sched" in hex).
SCHEDULING_LOCK_KEY = 0x6D657461_73636864
DHCP_OWNER = "network:dhcp"
DHCP_DEVICE_PREFIX = "dhcp-"  # a netagent's DHCP ports have device_id dhcp-<host>


def aware(value: datetime) -> datetime:
    """A stored timestamp as UTC (SQLite gives it back without its zone)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def lock_scheduling(session: Session) -> None:
    """Serialize schedulers across processes and nodes, until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEDULING_LOCK_KEY})


# -- reading ------------------------------------------------------------------------------


def _infos(rows: Sequence[AgentRow], policy: SchedulingPolicy, now: datetime) -> list[AgentInfo]:
    return [
        AgentInfo(
            row.id,
            row.host,
            frozenset(row.capabilities),
            policy.alive(aware(row.heartbeat_at), now),
        )
        for row in rows
    ]


def _bindings(
    session: Session,
    row_type: type[DhcpBindingRow] | type[L3BindingRow],
    targets: Collection[str] | None,
) -> dict[str, list[Bound]]:
    """The bindings of `targets` (networks or routers; None: of all of them)."""
    column = DhcpBindingRow.network_id if row_type is DhcpBindingRow else L3BindingRow.router_id
    query = select(column, row_type.agent_id, row_type.binding_index).order_by(
        column, row_type.binding_index
    )
    if targets is not None:
        if not targets:
            return {}
        query = query.where(column.in_(list(targets)))
    found: dict[str, list[Bound]] = defaultdict(list)
    for target, agent_id, index in session.execute(query):
        found[target].append(Bound(agent_id, index))
    return found


def _loads(session: Session, row_type: type[DhcpBindingRow] | type[L3BindingRow]) -> Counter[str]:
    query = select(row_type.agent_id, func.count()).group_by(row_type.agent_id)
    return Counter({agent_id: count for agent_id, count in session.execute(query)})


def bound_agents(
    session: Session, row_type: type[DhcpBindingRow] | type[L3BindingRow], targets: Sequence[str]
) -> dict[str, list[str]]:
    """Agent ids serving each of `targets` (networks or routers), by slot."""
    bindings = _bindings(session, row_type, targets)
    return {target: [b.agent_id for b in bindings.get(target, [])] for target in targets}


def agent_views(
    session: Session, rows: Sequence[AgentRow], policy: SchedulingPolicy, now: datetime
) -> list[AgentView]:
    """API views of agents with what is scheduled to them (two queries for all)."""
    networks: dict[str, list[str]] = {row.id: [] for row in rows}
    routers: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        ids = list(networks)
        dhcp = select(DhcpBindingRow.agent_id, DhcpBindingRow.network_id).where(
            DhcpBindingRow.agent_id.in_(ids)
        )
        for agent_id, network_id in session.execute(dhcp.order_by(DhcpBindingRow.network_id)):
            networks[agent_id].append(network_id)
        l3 = select(L3BindingRow.agent_id, L3BindingRow.router_id).where(
            L3BindingRow.agent_id.in_(ids)
        )
        for agent_id, router_id in session.execute(l3.order_by(L3BindingRow.router_id)):
            routers[agent_id].append(router_id)
    return [
        AgentView.model_validate(
            {
                "id": row.id,
                "host": row.host,
                "capabilities": sorted(row.capabilities),
                "alive": policy.alive(aware(row.heartbeat_at), now),
                "heartbeat_at": row.heartbeat_at,
                "created_at": row.created_at,
                "networks": networks[row.id],
                "routers": routers[row.id],
            }
        )
        for row in rows
    ]


def list_agents(
    session: Session, policy: SchedulingPolicy, now: datetime, *, host: str | None = None
) -> list[AgentView]:
    """Agents, by host, filtered by host."""
    query = select(AgentRow).order_by(AgentRow.host)
    if host is not None:
        query = query.where(AgentRow.host == host)
    return agent_views(session, session.scalars(query).all(), policy, now)


def get_agent_row(session: Session, agent_id: str) -> AgentRow:
    """The agent with this id, or NotFound."""
    row = session.get(AgentRow, agent_id)
    if row is None:
        raise NotFound(f"agent {agent_id} not found")
    return row


# -- scheduling ---------------------------------------------------------------------------


def _plans(
    session: Session,
    policy: SchedulingPolicy,
    now: datetime,
    networks: Sequence[str] | None,
    routers: Sequence[str] | None,
    failover: bool,
) -> tuple[list[Move], list[Move], list[AgentInfo]]:
    """The DHCP and L3 moves for these networks and routers (None: all of them)."""
    agents = _infos(session.scalars(select(AgentRow)).all(), policy, now)
    network_ids = session.scalars(select(NetworkRow.id)).all() if networks is None else networks
    dhcp_moves = plan(
        {network_id: policy.dhcp_agents_per_network for network_id in network_ids},
        _bindings(session, DhcpBindingRow, networks),
        agents,
        "dhcp",
        failover=failover and policy.allow_automatic_dhcp_failover,
        load=_loads(session, DhcpBindingRow),
    )
    query = select(RouterRow.id, RouterRow.ha)
    if routers is not None:
        query = query.where(RouterRow.id.in_(list(routers)))
    found = session.execute(query).all() if routers is None or routers else []
    l3_moves = plan(
        {router_id: policy.max_l3_agents_per_router if ha else 1 for router_id, ha in found},
        _bindings(session, L3BindingRow, routers),
        agents,
        "l3",
        failover=failover and policy.allow_automatic_l3agent_failover,
        load=_loads(session, L3BindingRow),
    )
    return dhcp_moves, l3_moves, agents


def stray_dhcp_ports(session: Session) -> list[PortRow]:
    """DHCP ports of DHCP-capable agents on networks not scheduled to them: made by a
    netagent from a topology read just before the network moved away from it."""
    agents = session.scalars(select(AgentRow)).all()
    by_device = {DHCP_DEVICE_PREFIX + a.host: a.id for a in agents if "dhcp" in a.capabilities}
    if not by_device:
        return []
    bound = set(session.execute(select(DhcpBindingRow.network_id, DhcpBindingRow.agent_id)))
    ports = session.scalars(
        select(PortRow).where(
            PortRow.device_owner == DHCP_OWNER, PortRow.device_id.in_(list(by_device))
        )
    ).all()
    return [port for port in ports if (port.network_id, by_device[port.device_id]) not in bound]


def pending(session: Session, policy: SchedulingPolicy, now: datetime) -> bool:
    """Whether a scheduling pass with failover would change anything (a read, no lock)."""
    dhcp_moves, l3_moves, _ = _plans(session, policy, now, None, None, failover=True)
    return bool(dhcp_moves or l3_moves or stray_dhcp_ports(session))


def schedule(
    tx: Tx,
    policy: SchedulingPolicy,
    now: datetime,
    *,
    networks: Sequence[str] | None = None,
    routers: Sequence[str] | None = None,
    failover: bool = False,
) -> int:
    """Bind these networks and routers (None: all) to agents under the scheduling lock;
    with `failover`, also move them off dead agents and remove stray DHCP ports. The number
    of bindings and ports changed."""
    lock_scheduling(tx.session)
    dhcp_moves, l3_moves, agents = _plans(tx.session, policy, now, networks, routers, failover)
    hosts = {agent.id: agent.host for agent in agents}
    _apply_dhcp(tx, dhcp_moves, hosts)
    _apply_l3(tx, l3_moves)
    strays = stray_dhcp_ports(tx.session) if failover else []
    for port in strays:
        delete_port(tx, port)
    return len(dhcp_moves) + len(l3_moves) + len(strays)


def _removes_first(moves: Sequence[Move]) -> list[Move]:
    return sorted(moves, key=lambda move: move.action != "remove")


def _apply_dhcp(tx: Tx, moves: Sequence[Move], hosts: dict[str, str]) -> None:
    session = tx.session
    for move in _removes_first(moves):
        if move.action == "remove":
            session.execute(
                delete(DhcpBindingRow).where(
                    DhcpBindingRow.network_id == move.target,
                    DhcpBindingRow.agent_id == move.agent_id,
                )
            )
            _drop_dhcp_port(tx, move.target, hosts[move.agent_id])
        else:
            session.add(
                DhcpBindingRow(
                    network_id=move.target, agent_id=move.agent_id, binding_index=move.index
                )
            )
        session.flush()
    for network_id in sorted({move.target for move in moves}):
        network = session.get(NetworkRow, network_id)
        if network is not None:
            _note(tx, "network", network_id, network.project_id, network_id)


def _drop_dhcp_port(tx: Tx, network_id: str, host: str) -> None:
    """The DHCP port of an agent that no longer serves the network goes (its address too)."""
    ports = tx.session.scalars(
        select(PortRow).where(
            PortRow.network_id == network_id,
            PortRow.device_owner == DHCP_OWNER,
            PortRow.device_id == DHCP_DEVICE_PREFIX + host,
        )
    ).all()
    for port in ports:
        delete_port(tx, port)


def _apply_l3(tx: Tx, moves: Sequence[Move]) -> None:
    session = tx.session
    for move in _removes_first(moves):
        if move.action == "remove":
            session.execute(
                delete(L3BindingRow).where(
                    L3BindingRow.router_id == move.target, L3BindingRow.agent_id == move.agent_id
                )
            )
        else:
            session.add(
                L3BindingRow(
                    router_id=move.target, agent_id=move.agent_id, binding_index=move.index
                )
            )
        session.flush()
    for router_id in sorted({move.target for move in moves}):
        router = session.get(RouterRow, router_id)
        if router is not None:
            _note(tx, "router", router_id, router.project_id)


def _note(
    tx: Tx, resource: Resource, resource_id: str, project_id: str, network_id: str = ""
) -> None:
    """Record the object's update, unless this transaction already recorded a change of it
    (a network or router scheduled as it is created)."""
    if any(c.resource == resource and c.resource_id == resource_id for c in tx.changes):
        return
    tx.record(resource, resource_id, "update", project_id=project_id, network_id=network_id)


# -- agents -------------------------------------------------------------------------------


def report(tx: Tx, spec: AgentReport, policy: SchedulingPolicy, now: datetime) -> AgentView:
    """Register the agent or refresh its heartbeat. A new agent, one back from the dead or
    one whose capabilities changed gets what is waiting for an agent scheduled to it."""
    session = tx.session
    row = session.scalars(select(AgentRow).where(AgentRow.host == spec.host)).one_or_none()
    capabilities = sorted(spec.capabilities)
    if row is None:
        row = AgentRow(id=str(uuid.uuid4()), host=spec.host, created_at=now)
        session.add(row)
        changed = True
    else:
        revived = not policy.alive(aware(row.heartbeat_at), now)
        changed = revived or sorted(row.capabilities) != capabilities
    row.capabilities = capabilities
    row.heartbeat_at = now
    session.flush()
    if changed:
        schedule(tx, policy, now)
    return agent_views(session, [row], policy, now)[0]


def delete_agent(tx: Tx, agent_id: str, policy: SchedulingPolicy, now: datetime) -> None:
    """Remove an agent: what it served goes to other agents (or waits for one)."""
    session = tx.session
    row = get_agent_row(session, agent_id)
    networks = session.scalars(
        select(DhcpBindingRow.network_id).where(DhcpBindingRow.agent_id == agent_id)
    ).all()
    routers = session.scalars(
        select(L3BindingRow.router_id).where(L3BindingRow.agent_id == agent_id)
    ).all()
    _apply_dhcp(tx, [Move("remove", n, agent_id, 0) for n in networks], {agent_id: row.host})
    _apply_l3(tx, [Move("remove", r, agent_id, 0) for r in routers])
    session.delete(row)
    session.flush()
    schedule(tx, policy, now, networks=list(networks), routers=list(routers))
