"""The soak at CI length: `metastack bench soak --duration 120` passes (no error, no growth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.needs import missing

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

METASTACK = str(Path(sys.executable).with_name("metastack"))
DURATION = 120


def why_not() -> str | None:
    return missing("the soak", ("ip", "wrk", "busybox", "dnsmasq"))


def test_soak_holds_half_the_maximum_without_errors_or_growth(tmp_path: Path) -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [METASTACK, "bench", "soak", "--duration", str(DURATION), "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=DURATION + 400,
    )
    print(done.stdout)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"], (report["problems"], done.stdout)
    assert done.returncode == 0
    load = report["load"]
    assert load["requests"] >= 0.95 * report["rate_target"] * (DURATION + report["warmup_s"])
    assert load["ok"] == load["requests"]
    roles = {row["role"] for row in report["processes"]}
    assert {"api", "api-worker-1", "api-worker-2", "agent", "proxy", "netagent"} <= roles
    assert any(role.startswith("dnsmasq-") for role in roles)
