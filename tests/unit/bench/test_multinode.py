"""The multi-node benchmarks' pure parts: the run's own database, guests spread over the
DHCP ports of several network nodes, and what freshness counts as stale."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metastack.bench import fleet, nodes
from metastack.bench.freshness import FreshnessError, Options, Probe
from metastack.bench.plumbing import Addressing
from metastack.demo.errors import DemoUsageError


def test_every_run_gets_a_database_of_its_own_on_the_same_server() -> None:
    url = "postgresql+psycopg://postgres:secret@/metastack_bench?host=/var/run/postgresql"
    assert nodes.run_database(url, "a1b2c3") == (
        "postgresql+psycopg://postgres:secret@/metastack_bench_a1b2c3?host=%2Fvar%2Frun%2Fpostgresql"
    )
    assert nodes.run_database("", "a1b2c3") == ""
    assert nodes.database_kind(url) == "postgresql" and nodes.database_kind("") == "sqlite"
    with pytest.raises(DemoUsageError, match="SQLite is the default"):
        nodes.check_database("sqlite:////tmp/x.sqlite", 1, in_namespaces=False)
    nodes.check_database("postgresql+psycopg://u@127.0.0.1/x", 1, in_namespaces=False)


def isolated(ports: int) -> fleet.Net:
    net = fleet.Net(1, "net-id", "bench-1")
    net.dhcp_ports = [
        fleet.DhcpPort(f"p{i}", f"10.0.0.{2 + i}", f"fa:16:3e:00:00:0{i}", f"dhcp-net-{i + 1}")
        for i in range(ports)
    ]
    return net


def test_guests_of_an_isolated_network_take_its_dhcp_ports_in_turn() -> None:
    net = isolated(2)
    hops = [dict(net.routes(slot))["169.254.169.254/32"] for slot in range(4)]
    assert hops == ["10.0.0.2", "10.0.0.3", "10.0.0.2", "10.0.0.3"]
    assert all(dict(net.routes(slot))["0.0.0.0/0"] == fleet.GATEWAY for slot in range(4))
    assert net.macs() == {"10.0.0.2": "fa:16:3e:00:00:00", "10.0.0.3": "fa:16:3e:00:00:01"}
    routed = fleet.Net(0, "r-net", "bench-0", router_id="router", router_mac="fa:16:3e:aa:aa:aa")
    routed.dhcp_ports = net.dhcp_ports
    assert {dict(routed.routes(s))["169.254.169.254/32"] for s in range(3)} == {fleet.GATEWAY}
    assert routed.macs()[fleet.GATEWAY] == "fa:16:3e:aa:aa:aa"


def test_a_dhcp_sample_may_name_either_nodes_port_but_nothing_else() -> None:
    net = isolated(2)
    member = fleet.Member(1, net, "uuid", "10.0.0.10")
    seen = {
        "g-a": ("10.0.0.10", Addressing(20, 1450, net.routes(1))),
        "g-b": ("10.0.0.10", Addressing(20, 1450, net.routes(0))),
        "g-c": ("10.0.0.10", Addressing(20, 1450, (("169.254.169.254/32", "10.0.0.9"),))),
        "g-d": ("10.0.0.11", Addressing(20, 1450, net.routes(0))),
    }
    problems = fleet.check_dhcp(seen, dict.fromkeys(seen, member))
    assert len(problems) == 2
    assert problems[0].startswith("g-c: DHCP routes") and "expected 10.0.0.10" in problems[1]


def test_members_know_their_place_in_their_network() -> None:
    assert [fleet.Member(i, isolated(1), "u", "ip", net_count=4).slot for i in (0, 3, 4, 9)] == [
        0,
        0,
        1,
        2,
    ]
    assert fleet.default_networks(20) == 2 and fleet.default_networks(20, 2) == 4
    assert fleet.default_networks(1000, 2) == 4 and fleet.default_networks(1001) == 5


class Scripted(Probe):
    """A probe whose write does nothing and whose reads answer from a script: a value, or
    None for a read that fails."""

    def __init__(self, answers: list[str | None]) -> None:
        super().__init__(Options(first_read_ms=0.0, interval_ms=0.0), "fabric", "10.255.0.11",
                         "token", "guest")  # fmt: skip
        self.answers: Iterator[str | None] = iter(answers)

    def write(self, instance: str, value: str) -> None:
        pass

    def read(self) -> str:
        answer = next(self.answers)
        if answer is None:
            raise FreshnessError("HTTP 503")
        return answer


def test_a_write_seen_at_once_has_no_stale_read() -> None:
    outcome = Scripted(["new"] * 5).measure("i", "new")
    assert outcome.fresh_ms is not None and not outcome.first_read_stale
    assert (outcome.reads, outcome.stale_after_fresh) == (5, 0)  # the fresh one and 4 more


def test_stale_first_reads_and_stale_reads_after_a_fresh_one_are_counted_apart() -> None:
    outcome = Scripted(["old", "old", "new", "old", "new", "new", "new"]).measure("i", "new")
    assert outcome.first_read_stale is True
    assert outcome.stale_after_fresh == 1
    assert outcome.reads == 7


def test_a_failed_read_is_neither_fresh_nor_stale() -> None:
    outcome = Scripted([None, "new", "new", None, "new", "new"]).measure("i", "new")
    assert outcome.first_read_stale is False and outcome.stale_after_fresh == 0
    assert outcome.read_errors == {"HTTP 503": 2}
    assert outcome.fresh_ms is not None and outcome.reads == 6
