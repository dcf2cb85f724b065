"""The security tier's world: the e2e topology and chain, with short guest-side timeouts."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from e2e.world import World, add_service_logs, running_world
from security.harness import HEADER_TIMEOUT, Baseline, check_intact, why_not


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """Two projects with overlapping networks, guests on both paths; removed and checked."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # A short head deadline keeps the slow-client cases short; the rest is default.
    with running_world(proxy={"header_timeout": HEADER_TIMEOUT}) as built:
        yield built


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
    add_service_logs(item, report)
    return report
