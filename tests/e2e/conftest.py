"""One topology and one chain (api, agent, proxy as CLI processes) shared by the e2e tier.

Skips, saying why, without root, `ip`, `curl` or Debian's cloud-init. Everything the run
creates (namespaces, /etc/netns files, processes, the work directory) is removed at the
end, also after a failure, and the removal is checked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from metastack.lab.guest import GUEST_PYTHON

from .world import World, add_service_logs, running_world


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
    with running_world() as built:
        yield built


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """A failed e2e test's report ends with the tail of each service's log."""
    report = yield
    add_service_logs(item, report)
    return report
