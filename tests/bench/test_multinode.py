"""The benchmarks on several nodes (2 API nodes on PostgreSQL, 2 network nodes) through
their CLI: `bench freshness` with 20 writes, `bench bootstorm` with 20 guests.

Each run keeps to its own folder, prefix and database (`<name>_<run>`, dropped at the
end), so these run beside a demo and beside each other.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.benchrun import databases, leftovers, postgres_absent, socket_url
from support.needs import missing

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.postgres]

METASTACK = str(Path(sys.executable).with_name("metastack"))
FRESHNESS_KEYS = {"writes", "p50_ms", "p99_ms", "max_ms", "stale_reads", "stale_first_reads"}


def database_or_skip() -> str:
    """A database name for the run (the run appends its id); skips, saying why, when the
    nodes could not reach PostgreSQL."""
    reason = missing("the multi-node benchmarks", ("ip", "busybox", "dnsmasq"))
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    reason = postgres_absent()
    if reason:
        if os.environ.get("METASTACK_REQUIRE_POSTGRES"):
            pytest.fail(f"{reason}, but METASTACK_REQUIRE_POSTGRES is set (CI)")
        print(f"skipped: {reason}")
        pytest.skip(reason)
    return f"ms_bench_{secrets.token_hex(4)}"


def run_bench(*args: str, out: Path, timeout: float) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [METASTACK, "bench", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.exists(), done.stdout + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return done.returncode, report, done.stdout + done.stderr[-3000:]


def test_freshness_of_20_writes_across_api_nodes(tmp_path: Path) -> None:
    name = database_or_skip()
    status, report, output = run_bench(
        "freshness", "--writes", "20", "--api-nodes", "2", "--network-nodes", "2",
        "--database", socket_url(name),
        out=tmp_path / "freshness.json", timeout=90,
    )  # fmt: skip
    assert set(report) >= FRESHNESS_KEYS
    assert report["writes"] == 20, output
    assert report["write_errors"] == 0 and report["read_errors"] == 0, output
    # Every write was seen, after the first read (5 ms after the acknowledgement) at best.
    assert report["never_fresh"] == 0, output
    assert 5.0 <= report["p50_ms"] <= report["p99_ms"] <= report["max_ms"] < 10_000
    assert 0 <= report["stale_first_reads"] <= 20
    assert report["stale_first_reads"] + report["fresh_at_first_read"] == 20
    # 1 first read, then until fresh, then 4 more: at least 5 reads a write.
    assert report["reads"] >= 20 * 5 + report["stale_first_reads"]
    assert report["writer"].startswith("api-1") and "api-2 only" in report["reader"]
    assert report["database"] == "postgresql"
    stale = report["stale_reads"] + report["stale_first_reads"]
    assert status == (1 if stale else 0), output
    assert leftovers(report) == []
    assert not {db for db in databases() if db.startswith(name)}


def test_bootstorm_of_20_on_two_network_nodes_has_no_error(tmp_path: Path) -> None:
    name = database_or_skip()
    status, report, output = run_bench(
        "bootstorm", "--instances", "20", "--api-nodes", "2", "--network-nodes", "2",
        "--database", socket_url(name), "--probes", "2",
        out=tmp_path / "storm.json", timeout=90,
    )  # fmt: skip
    assert status == 0, output
    assert report["instances"] == 20 and report["api_nodes"] == 2
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["crawls_complete"] == 20
    assert report["sequence_ok"] is True, report["sequence_checks"]
    # Both network nodes answered guests, and every guest is counted once.
    spread = report["guests_per_network_node"]
    assert set(spread) == {"net-1", "net-2"} and min(spread.values()) > 0, spread
    assert sum(spread.values()) == 20
    assert {"api-1", "api-2", "net-1-agent", "net-2-agent", "net-1-proxy", "net-2-proxy"} <= set(
        report["rss_mb"]
    )
    assert leftovers(report) == []
    assert not {db for db in databases() if db.startswith(name)}
