"""The multi-node demo's static schedule: networks on two nodes, routers on one."""

from __future__ import annotations

from metastack.demo.schedule import NOTHING, Serves, netagent_lists, schedule

NETWORKS = ["n1", "n2", "n3", "n4"]
ROUTERS = ["r1", "r2"]


def test_two_nodes_both_serve_every_network_and_one_router_each() -> None:
    served = schedule(NETWORKS, ROUTERS, ["net-1", "net-2"])
    assert served == {
        "net-1": Serves(NETWORKS, ["r1"]),
        "net-2": Serves(NETWORKS, ["r2"]),
    }


def test_every_network_on_two_distinct_nodes_every_router_on_one() -> None:
    for count in range(2, 9):
        nodes = [f"net-{i}" for i in range(1, count + 1)]
        served = schedule(NETWORKS, ROUTERS, nodes)
        for network in NETWORKS:
            assert sum(network in s.networks for s in served.values()) == 2
        for router in ROUTERS:
            assert sum(router in s.routers for s in served.values()) == 1


def test_one_node_serves_everything_once() -> None:
    assert schedule(NETWORKS, ROUTERS, ["net-1"]) == {"net-1": Serves(NETWORKS, ROUTERS)}


def test_a_node_with_nothing_of_a_kind_gets_an_id_nothing_has() -> None:
    # The netagent reads an empty list as "all": that node would serve every router.
    served = schedule(NETWORKS, ROUTERS, ["net-1", "net-2", "net-3"])
    assert served["net-3"].routers == []
    assert netagent_lists(served["net-3"]) == (served["net-3"].networks, [NOTHING])
    assert netagent_lists(Serves()) == ([NOTHING], [NOTHING])
