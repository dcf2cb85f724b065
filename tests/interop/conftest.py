"""The interop tier: upstream's nova and neutron services in the chain beside ours.

Needs root, `ip`, `curl` and haproxy (skips saying so without them), and the upstream
environment: `scripts/upstream-venv` builds `.upstream-venv` (nova and neutron from PyPI,
pinned by tests/interop/constraints.txt) the first time, a few minutes, and does nothing
afterwards. A failure to build it fails the tier: it is not a missing facility.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from metastack.lab.upstream import find_python
from support.needs import missing

from .world import World, running_world

CHECKOUT = Path(__file__).resolve().parents[2]


def why_not() -> str | None:
    return missing("interop", ("ip", "curl", "haproxy"), cloud_init=False)


@pytest.fixture(scope="session")
def upstream_python() -> Path:
    """The upstream environment's Python, built by the project's script if needed."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    done = subprocess.run(
        [str(CHECKOUT / "scripts" / "upstream-venv")], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/upstream-venv failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    print(f"\n{done.stdout.strip()} ({time.monotonic() - started:.0f} s)")
    return find_python(CHECKOUT)


@pytest.fixture(scope="session")
def world(upstream_python: Path) -> Iterator[World]:
    with running_world(upstream_python) as built:
        yield built


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """A failed interop test's report ends with the tail of every service's log."""
    report = yield
    world = getattr(item, "funcargs", {}).get("world")
    if report.failed and isinstance(world, World):
        for name, text in world.log_tails().items():
            report.sections.append((f"{name} (tail)", text))
    return report
