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
