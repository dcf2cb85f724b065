"""The security tier's world: the e2e topology and chain, with short guest-side timeouts."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.world import World, build
from metastack.lab import Lab
from metastack.lab.chain import Chain
from security.harness import HEADER_TIMEOUT, Baseline, check_intact, why_not

AGENT_UPSTREAM_TIMEOUT = 5.0
AGENT_FEED_WAIT = 2


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """Two projects with overlapping networks, guests on both paths; removed and checked."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"ms-{run_id}-"))
    lab = Lab(run_id, ipv6=True)
    chain = Chain(
        workdir,
        api_workers=2,
        agent={"upstream_timeout": AGENT_UPSTREAM_TIMEOUT, "feed_wait": AGENT_FEED_WAIT},
        # A short head deadline keeps the slow-client cases short; the rest is default.
        proxy={"header_timeout": HEADER_TIMEOUT},
    )
    started: list[int] = []
    try:
        chain.start()
        started = [pid for pids in chain.pids().values() for pid in pids]
        yield build(lab, chain, workdir)
    except BaseException:
        for service, text in chain.logs().items():
            print(f"--- {service} log ---\n{text[-3000:]}")
        raise
    finally:
        try:
            chain.stop()
        finally:
            lab.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix not in left, f"namespaces left behind: {left}"
        assert not list(Path("/etc/netns").glob(f"{lab.prefix}*"))
        assert not workdir.exists()
        for pid in started:
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"pid {pid} still runs"


@pytest.fixture
def intact(world: World) -> Iterator[Baseline]:
    """Around each case: every process keeps its PID and the chain answers afterwards."""
    baseline = Baseline.take(world)
    yield baseline
    check_intact(world, baseline)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """A failed case's report ends with the tail of each service's log."""
    report = yield
    world = getattr(item, "funcargs", {}).get("world")
    if report.failed and isinstance(world, World):
        for service, text in world.chain.logs().items():
            report.sections.append((f"metastack {service} log (tail)", text[-4000:]))
    return report


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
