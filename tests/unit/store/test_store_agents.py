"""Agents and scheduling in the SQL store, on SQLite and PostgreSQL: state reports, networks
and routers bound as they are created, HA routers and their VRRP ids, dead agents."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from metastack.errors import Conflict, NotFound
from metastack.store.ports import PortFilter
from metastack.store.scheduling import SchedulingPolicy
from metastack.store.schema import RouterRow
from metastack.store.specs import (
    AgentReport,
    FixedIpSpec,
    NetworkCreate,
    PortCreate,
    RouterCreate,
    SubnetCreate,
)
from metastack.store.sql import SqlStore

DOWN = 75


@pytest.fixture
def make_store(database_url: str) -> Iterator[Callable[..., SqlStore]]:
    stores: list[SqlStore] = []

    def make(**policy: object) -> SqlStore:
        store = SqlStore(database_url, scheduling=SchedulingPolicy(**policy))  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def report(store: SqlStore, host: str, at: datetime, *caps: str) -> str:
    spec = AgentReport.model_validate(
        {"host": host, **({"capabilities": list(caps)} if caps else {})}
    )
    return store.report_agent(spec, now=at).id


def test_report_registers_once_and_refreshes_the_heartbeat(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store()
    T0 = datetime.now(UTC)
    first = store.report_agent(AgentReport(host="node-1"), now=T0)
    assert (first.host, first.capabilities, first.alive) == (
        "node-1",
        ["dhcp", "l3", "metadata"],
        True,
    )
    again = store.report_agent(AgentReport(host="node-1"), now=T0 + timedelta(seconds=30))
    assert again.id == first.id
    assert again.heartbeat_at == T0 + timedelta(seconds=30)
    assert [a.id for a in store.list_agents()] == [first.id]
    assert store.list_agents(host="node-2") == []
    later = T0 + timedelta(seconds=30 + DOWN + 1)
    assert store.get_agent(first.id, now=later).alive is False
    with pytest.raises(NotFound):
        store.get_agent("00000000-0000-4000-8000-000000000000")


def test_networks_and_routers_are_scheduled_as_created_least_loaded_first(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store()
    now = datetime.now(UTC)
    a = report(store, "a", now)
    b = report(store, "b", now, "dhcp", "metadata")  # no l3: never gets a router
    nets = [store.create_network(NetworkCreate(project_id="p")) for _ in range(4)]
    assert sorted(n.dhcp_agents[0] for n in nets) == sorted([a, a, b, b])
    routers = [store.create_router(RouterCreate(project_id="p")) for _ in range(3)]
    assert [r.l3_agents for r in routers] == [[a], [a], [a]]
    assert [r.ha for r in routers] == [False] * 3
    agents = {agent.host: agent for agent in store.list_agents()}
    assert sorted(agents["a"].networks) == sorted(n.id for n in nets if n.dhcp_agents == [a])
    assert sorted(agents["a"].routers) == sorted(r.id for r in routers)
    assert agents["b"].routers == []
    assert store.get_network(nets[0].id).dhcp_agents == nets[0].dhcp_agents


def test_an_agent_that_registers_gets_what_waited_for_one(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store()
    network = store.create_network(NetworkCreate(project_id="p"))
    router = store.create_router(RouterCreate(project_id="p"))
    assert (network.dhcp_agents, router.l3_agents) == ([], [])
    revision = store.current_revision()
    agent = report(store, "only", datetime.now(UTC))
    assert store.get_network(network.id).dhcp_agents == [agent]
    assert store.get_router(router.id).l3_agents == [agent]
    changed = {(c.resource, c.resource_id) for c in store.changes_since(revision)}
    assert changed == {("network", network.id), ("router", router.id)}  # netagents react
    revision = store.current_revision()
    report(store, "only", datetime.now(UTC))
    assert store.current_revision() == revision  # a heartbeat is not a change


def test_ha_routers_get_two_agents_and_a_vrid_unique_in_their_project(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store(max_l3_agents_per_router=2)
    now = datetime.now(UTC)
    for host in ("a", "b", "c"):
        report(store, host, now)
    first = store.create_router(RouterCreate(project_id="p1"))
    second = store.create_router(RouterCreate(project_id="p1"))
    other = store.create_router(RouterCreate(project_id="p2"))
    assert (first.ha, first.vrid, second.vrid, other.vrid) == (True, 1, 2, 1)
    for router in (first, second, other):
        assert len(set(router.l3_agents)) == 2
    store.delete_router(first.id)
    assert store.create_router(RouterCreate(project_id="p1")).vrid == 1  # freed, reused
    plain = make_store().create_router(RouterCreate(project_id="p1"))
    assert (plain.ha, plain.vrid, len(plain.l3_agents)) == (False, None, 1)


def test_no_free_vrid_is_a_conflict(make_store: Callable[..., SqlStore]) -> None:
    store = make_store(max_l3_agents_per_router=2)
    with Session(store.engine) as session, session.begin():  # 254 HA routers, in one go
        session.add_all(
            RouterRow(id=str(uuid.uuid4()), project_id="p", ha=True, vrid=vrid,
                      created_revision=0, created_at=datetime.now(UTC))
            for vrid in range(2, 256)
        )  # fmt: skip
    assert store.create_router(RouterCreate(project_id="p")).vrid == 1
    with pytest.raises(Conflict, match="VRRP"):
        store.create_router(RouterCreate(project_id="p"))
    assert store.create_router(RouterCreate(project_id="q")).vrid == 1


def test_dead_agent_loses_its_networks_and_routers_to_live_ones(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store(agent_down_time=DOWN)
    T0 = datetime.now(UTC)
    dead = report(store, "dead", T0)
    network = store.create_network(NetworkCreate(project_id="p"))
    subnet = store.create_subnet(SubnetCreate(network_id=network.id, cidr="10.0.0.0/24"))
    router = store.create_router(RouterCreate(project_id="p"))
    store.create_port(
        PortCreate(
            network_id=network.id,
            device_owner="network:dhcp",
            device_id="dhcp-dead",
            fixed_ips=[FixedIpSpec(subnet_id=subnet.id)],
        )
    )
    assert store.get_network(network.id).dhcp_agents == [dead]
    later = T0 + timedelta(seconds=DOWN + 10)
    assert store.reschedule(now=later) == 0  # nobody alive to take over: kept
    live = report(store, "live", later)
    revision = store.current_revision()
    assert store.reschedule(now=later) == 4  # two removed, two added
    assert store.get_network(network.id).dhcp_agents == [live]
    assert store.get_router(router.id).l3_agents == [live]
    assert store.list_ports(PortFilter(device_ids=["dhcp-dead"])) == []  # its address freed
    changes = store.changes_since(revision)
    assert {(c.resource, c.resource_id, c.action) for c in changes} >= {
        ("network", network.id, "update"),
        ("router", router.id, "update"),
    }
    assert store.reschedule(now=later) == 0
    # back from the dead: nothing moves back, but it is alive again
    assert report(store, "dead", later) == dead
    assert store.get_network(network.id).dhcp_agents == [live]


def test_failover_can_be_turned_off(make_store: Callable[..., SqlStore]) -> None:
    store = make_store(allow_automatic_dhcp_failover=False, allow_automatic_l3agent_failover=False)
    T0 = datetime.now(UTC)
    dead = report(store, "dead", T0)
    network = store.create_network(NetworkCreate(project_id="p"))
    router = store.create_router(RouterCreate(project_id="p"))
    later = T0 + timedelta(seconds=DOWN + 10)
    report(store, "live", later)
    assert store.reschedule(now=later) == 0
    assert store.get_network(network.id).dhcp_agents == [dead]
    assert store.get_router(router.id).l3_agents == [dead]


def test_deleting_an_agent_moves_what_it_served(make_store: Callable[..., SqlStore]) -> None:
    store = make_store()
    now = datetime.now(UTC)
    gone = report(store, "gone", now)
    network = store.create_network(NetworkCreate(project_id="p"))
    stays = report(store, "stays", now)
    store.delete_agent(gone)
    assert [a.host for a in store.list_agents()] == ["stays"]
    assert store.get_network(network.id).dhcp_agents == [stays]
    with pytest.raises(NotFound):
        store.delete_agent(gone)


def test_deleting_a_network_or_router_drops_its_bindings(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store()
    agent = report(store, "a", datetime.now(UTC))
    network = store.create_network(NetworkCreate(project_id="p"))
    router = store.create_router(RouterCreate(project_id="p"))
    store.delete_network(network.id)
    store.delete_router(router.id)
    [view] = store.list_agents()
    assert (view.id, view.networks, view.routers) == (agent, [], [])


def test_dhcp_ports_of_agents_not_serving_the_network_are_removed(
    make_store: Callable[..., SqlStore],
) -> None:
    store = make_store()
    now = datetime.now(UTC)
    report(store, "a", now)
    network = store.create_network(NetworkCreate(project_id="p"))
    subnet = store.create_subnet(SubnetCreate(network_id=network.id, cidr="10.0.0.0/24"))
    report(store, "b", now)  # DHCP-capable, but the network is a's
    report(store, "static", now, "l3", "metadata")  # serves a static list: not scheduled
    for host in ("a", "b", "static"):
        store.create_port(
            PortCreate(
                network_id=network.id,
                device_owner="network:dhcp",
                device_id=f"dhcp-{host}",
                fixed_ips=[FixedIpSpec(subnet_id=subnet.id)],
            )
        )
    assert store.reschedule() == 1
    left = {p.device_id for p in store.list_ports(PortFilter(network_ids=[network.id]))}
    assert left == {"dhcp-a", "dhcp-static"}
    assert store.reschedule() == 0
