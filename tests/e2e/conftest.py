"""One topology and one chain (api, agent, proxy as CLI processes) shared by the e2e tier.

Skips, saying why, without root, `ip`, `curl` or Debian's cloud-init. Everything the run
creates (namespaces, /etc/netns files, processes, the work directory) is removed at the
end, also after a failure, and the removal is checked.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from support.needs import missing

from .world import World, add_service_logs, running_world


def why_not() -> str | None:
    return missing("e2e", ("ip", "curl"))


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
