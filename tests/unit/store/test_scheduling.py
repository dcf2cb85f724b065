"""The scheduler's decisions, pure: least loaded first, counts, dead agents, capabilities."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from metastack.store.scheduling import (
    AgentInfo,
    Bound,
    Move,
    SchedulingPolicy,
    free_vrid,
    plan,
)

ALL = frozenset({"dhcp", "l3", "metadata"})


def agent(name: str, *, alive: bool = True, capabilities: frozenset[str] = ALL) -> AgentInfo:
    return AgentInfo(f"id-{name}", name, capabilities, alive)


def apply(bindings: dict[str, list[Bound]], moves: list[Move]) -> dict[str, list[Bound]]:
    result = {target: list(bounds) for target, bounds in bindings.items()}
    for move in moves:
        bounds = result.setdefault(move.target, [])
        if move.action == "remove":
            bounds[:] = [b for b in bounds if b.agent_id != move.agent_id]
        else:
            assert move.index not in {b.index for b in bounds}, "slot taken twice"
            bounds.append(Bound(move.agent_id, move.index))
    return result


def hosts(bounds: list[Bound]) -> set[str]:
    return {b.agent_id.removeprefix("id-") for b in bounds}


def test_a_new_network_goes_to_the_least_loaded_agent() -> None:
    agents = [agent("a"), agent("b"), agent("c")]
    bindings = {
        "n1": [Bound("id-a", 1)],
        "n2": [Bound("id-a", 1)],
        "n3": [Bound("id-c", 1)],
    }
    moves = plan(
        {"new": 1},
        {},
        agents,
        "dhcp",
        failover=False,
        load=Counter(b.agent_id for bounds in bindings.values() for b in bounds),
    )
    assert moves == [Move("add", "new", "id-b", 1)]


def test_many_networks_spread_evenly() -> None:
    agents = [agent("a"), agent("b"), agent("c")]
    wanted = {f"n{i}": 1 for i in range(9)}
    result = apply({}, plan(wanted, {}, agents, "dhcp", failover=False))
    assert Counter(b.agent_id for bounds in result.values() for b in bounds) == {
        "id-a": 3,
        "id-b": 3,
        "id-c": 3,
    }


def test_per_network_count_distinct_agents_and_no_more_than_exist() -> None:
    agents = [agent("a"), agent("b"), agent("c")]
    result = apply({}, plan({"n1": 2}, {}, agents, "dhcp", failover=False))
    assert len(result["n1"]) == 2 and len(hosts(result["n1"])) == 2
    assert sorted(b.index for b in result["n1"]) == [1, 2]
    result = apply({}, plan({"n1": 5}, {}, agents, "dhcp", failover=False))
    assert hosts(result["n1"]) == {"a", "b", "c"}


def test_an_agent_without_the_capability_is_never_chosen() -> None:
    agents = [
        agent("dhcp-only", capabilities=frozenset({"dhcp"})),
        agent("l3-only", capabilities=frozenset({"l3", "metadata"})),
    ]
    dhcp = apply({}, plan({f"n{i}": 1 for i in range(4)}, {}, agents, "dhcp", failover=False))
    assert all(hosts(bounds) == {"dhcp-only"} for bounds in dhcp.values())
    l3 = apply({}, plan({"r1": 2}, {}, agents, "l3", failover=False))
    assert hosts(l3["r1"]) == {"l3-only"}
    assert (
        plan(
            {"n1": 1},
            {},
            [agent("m", capabilities=frozenset({"metadata"}))],
            "dhcp",
            failover=False,
        )
        == []
    )


def test_a_binding_on_an_agent_that_lost_the_capability_moves() -> None:
    agents = [agent("a", capabilities=frozenset({"l3"})), agent("b")]
    moves = plan({"n1": 1}, {"n1": [Bound("id-a", 1)]}, agents, "dhcp", failover=False)
    assert moves == [Move("remove", "n1", "id-a", 1), Move("add", "n1", "id-b", 1)]


def test_dead_agent_with_failover_is_replaced_by_a_live_one() -> None:
    agents = [agent("dead", alive=False), agent("a"), agent("b")]
    bindings = {"n1": [Bound("id-dead", 1)], "n2": [Bound("id-a", 1)]}
    moves = plan({"n1": 1, "n2": 1}, bindings, agents, "dhcp", failover=True)
    assert moves == [Move("remove", "n1", "id-dead", 1), Move("add", "n1", "id-b", 1)]


def test_dead_agent_without_failover_keeps_its_slot() -> None:
    agents = [agent("dead", alive=False), agent("a")]
    bindings = {"n1": [Bound("id-dead", 1)]}
    assert plan({"n1": 1}, bindings, agents, "dhcp", failover=False) == []
    # two wanted: the free slot is filled, the dead agent's slot is not taken from it
    assert plan({"n1": 2}, bindings, agents, "dhcp", failover=False) == [
        Move("add", "n1", "id-a", 2)
    ]


def test_dead_agent_is_kept_where_no_live_agent_can_take_over() -> None:
    agents = [agent("dead", alive=False), agent("other-dead", alive=False)]
    bindings = {"n1": [Bound("id-dead", 1)]}
    assert plan({"n1": 1}, bindings, agents, "dhcp", failover=True) == []
    # one of two dead agents of an HA router replaced; the other kept (nobody left)
    agents.append(agent("a"))
    bindings = {"r1": [Bound("id-dead", 1), Bound("id-other-dead", 2)]}
    result = apply(bindings, plan({"r1": 2}, bindings, agents, "l3", failover=True))
    assert hosts(result["r1"]) == {"dead", "a"}


def test_ha_router_gets_two_agents_and_its_dead_one_is_replaced() -> None:
    agents = [agent("a"), agent("b"), agent("c")]
    result = apply({}, plan({"r1": 2}, {}, agents, "l3", failover=False))
    assert len(hosts(result["r1"])) == 2
    dead = result["r1"][0].agent_id.removeprefix("id-")
    agents = [agent(a.host, alive=a.host != dead) for a in agents]
    result = apply(result, plan({"r1": 2}, result, agents, "l3", failover=True))
    assert len(result["r1"]) == 2 and dead not in hosts(result["r1"])


def test_never_more_bindings_than_wanted() -> None:
    agents = [agent("a"), agent("b"), agent("c", alive=False)]
    bindings = {"n1": [Bound("id-a", 1), Bound("id-b", 2), Bound("id-c", 3)]}
    for failover in (True, False):
        result = apply(bindings, plan({"n1": 1}, bindings, agents, "dhcp", failover=failover))
        assert len(result["n1"]) == 1 and hosts(result["n1"]) <= {"a", "b"}


def test_nothing_to_do_is_no_moves() -> None:
    agents = [agent("a"), agent("b")]
    bindings = {"n1": [Bound("id-a", 1)], "r1": [Bound("id-a", 1), Bound("id-b", 2)]}
    assert plan({"n1": 1}, bindings, agents, "dhcp", failover=True) == []
    assert plan({"r1": 2}, bindings, agents, "l3", failover=True) == []


def test_vrid_is_the_lowest_free_one_from_1_to_255() -> None:
    assert free_vrid(set()) == 1
    assert free_vrid({1, 2, 4}) == 3
    assert free_vrid(set(range(1, 255))) == 255
    assert free_vrid(set(range(1, 256))) is None


def test_alive_means_reported_within_agent_down_time() -> None:
    policy = SchedulingPolicy(agent_down_time=75)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert policy.alive(now - timedelta(seconds=75), now)
    assert not policy.alive(now - timedelta(seconds=76), now)
    assert not SchedulingPolicy().ha_routers
    assert SchedulingPolicy(max_l3_agents_per_router=2).ha_routers
