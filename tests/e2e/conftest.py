"""One topology and one chain (api, agent, proxy as CLI processes) shared by the e2e tier.

Skips, saying why, without root, `ip`, `curl` or Debian's cloud-init. Everything the run
creates (namespaces, /etc/netns files, processes, the work directory) is removed at the
end, also after a failure, and the removal is checked.
"""

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

from metastack.lab import Lab
from metastack.lab.chain import Chain
from metastack.lab.guest import GUEST_PYTHON

from .world import World, build

# The agent answers 503 at the latest after this many seconds (the test asserts far less).
AGENT_UPSTREAM_TIMEOUT = 5.0
# A short change-feed long-poll: a graceful API stop waits for the open poll to end.
AGENT_FEED_WAIT = 2


def why_not() -> str | None:
    """Why this machine cannot run the e2e tier, or None."""
    if os.geteuid() != 0:
        return "e2e needs root for network namespaces"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"e2e needs {tool}"
    if not Path("/usr/bin/cloud-init").exists() or not Path(GUEST_PYTHON).exists():
        return "e2e needs Debian's cloud-init (/usr/bin/cloud-init, /usr/bin/python3)"
    return None


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """The shared world; torn down and checked after the last e2e test."""
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
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """A failed e2e test's report ends with the tail of each service's log."""
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
