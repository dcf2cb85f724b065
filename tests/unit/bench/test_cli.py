"""`metastack bench`: every benchmark is a subcommand, with the flags its script had."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from metastack.bench.cli import bench_command, join_values

BENCHMARKS = {
    "bootstorm",
    "chain",
    "metadata-api",
    "agent-load",
    "proxy-listeners",
    "soak",
    "neutron-agent",
    "freshness",
}


def params(name: str, *args: str) -> dict[str, object]:
    """The parsed flags of `metastack bench NAME ARGS`, without running it."""
    command = bench_command.commands[name]
    with command.make_context(name, list(args)) as ctx:
        return dict(ctx.params)


def test_every_benchmark_is_a_subcommand() -> None:
    assert set(bench_command.commands) == BENCHMARKS
    result = CliRunner().invoke(bench_command, ["--help"])
    assert result.exit_code == 0
    for name in BENCHMARKS:
        assert f"  {name} " in result.output


def test_several_values_after_one_flag_are_joined() -> None:
    assert join_values(["--concurrency", "1", "10", "100", "--rounds", "2"], ["--concurrency"]) == [
        "--concurrency",
        "1,10,100",
        "--rounds",
        "2",
    ]
    assert join_values(["--concurrency", "5"], ["--concurrency"]) == ["--concurrency", "5"]
    assert join_values(["--", "--concurrency", "1", "2"], ["--concurrency"]) == [
        "--",
        "--concurrency",
        "1",
        "2",
    ]


def test_agent_load_takes_levels_as_its_script_did() -> None:
    parsed = params("agent-load", "--concurrency", "1", "10", "100", "--rounds", "0")
    assert parsed["concurrency"] == (1, 10, 100)
    assert parsed["rounds"] == 1  # at least one round, as before
    assert params("agent-load", "--concurrency", "7")["concurrency"] == (7,)
    defaults = params("agent-load")
    assert defaults["concurrency"] == (1, 10, 100)
    assert (defaults["requests"], defaults["loop"], defaults["api"]) == (20000, "uvloop", "lean")
    with pytest.raises(click.BadParameter):
        params("agent-load", "--concurrency", "0")


def test_chain_and_metadata_api_write_to_docs_bench_by_default() -> None:
    chain = params("chain", "--concurrency", "1,100", "--close")
    assert chain["concurrency"] == (1, 100)
    assert chain["close"] is True
    assert chain["output"] == Path("docs/bench/chain.json")
    assert params("metadata-api")["json_path"] == Path("docs/bench/metadata_api.json")
    assert params("soak")["json_path"] == Path("docs/bench/soak.json")


def test_soak_refuses_bounds_its_script_refused() -> None:
    assert params("soak", "--duration", "120")["duration"] == 120.0
    for args in (["--duration", "0"], ["--warmup", "601"], ["--rate", "0"]):
        with pytest.raises(click.BadParameter):
            params("soak", *args)


def test_bootstorm_is_one_node_on_sqlite_by_default() -> None:
    parsed = params("bootstorm", "--instances", "10")
    assert (parsed["api_nodes"], parsed["network_nodes"], parsed["database"]) == (1, 1, "")
    several = params("bootstorm", "--instances", "10", "--api-nodes", "2", "--network-nodes", "3")
    assert (several["api_nodes"], several["network_nodes"]) == (2, 3)


def test_freshness_defaults_are_two_nodes_of_each_and_200_writes() -> None:
    parsed = params("freshness")
    assert (parsed["writes"], parsed["api_nodes"], parsed["network_nodes"]) == (200, 2, 2)
    assert parsed["time_limit"] == 120.0 and parsed["json_path"] is None
    with pytest.raises(click.BadParameter):
        params("freshness", "--writes", "0")


PG = "postgresql+psycopg://postgres@/bench?host=/var/run/postgresql"


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("freshness", [], "PostgreSQL"),  # two API nodes, no database
        ("freshness", ["--database", "sqlite:////tmp/x.sqlite"], "SQLite is the default"),
        ("freshness", ["--database", "postgresql+psycopg://postgres@127.0.0.1/x"], "unix socket"),
        ("bootstorm", ["--instances", "5", "--api-nodes", "2"], "PostgreSQL"),
        (
            "bootstorm",
            ["--instances", "5", "--network-nodes", "2", "--proxy", "haproxy"],
            "no --proxy haproxy",
        ),
    ],
)
def test_what_cannot_run_is_refused_before_anything_is_made(
    name: str, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(bench_command, [name, *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
