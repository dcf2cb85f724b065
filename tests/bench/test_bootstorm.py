"""`metastack bench bootstorm` through its CLI: a 50-guest storm with no error, and nothing left."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.benchrun import leftovers
from support.needs import missing

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

METASTACK = str(Path(sys.executable).with_name("metastack"))
PINNED = {"instances", "requests", "errors", "wall_s", "p50_ms", "p99_ms", "max_ms", "setup_s"}


def why_not() -> str | None:
    return missing("the boot storm", ("ip", "busybox", "dnsmasq"))


def test_storm_of_50_has_no_error_and_leaves_nothing(tmp_path: Path) -> None:
    reason = why_not()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    out, png = tmp_path / "storm.json", tmp_path / "storm.png"
    argv = [METASTACK, "bench", "bootstorm", "--instances", "50", "--json", str(out)]
    if importlib.util.find_spec("matplotlib") is not None:
        argv += ["--plot", str(png)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert out.exists(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert set(report) >= PINNED
    assert isinstance(report["rss_mb"], dict)
    assert {"agent", "proxy", "api-worker-1"} <= set(report["rss_mb"])
    assert report["instances"] == 50
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["crawls_complete"] == 50
    assert report["requests"] == sum(int(k) * v for k, v in report["requests_per_guest"].items())
    assert report["sequence_ok"] is True, report["sequence_checks"]
    assert report["addressing"]["dhcp"] >= 2
    if "--plot" in argv:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(report) == []
