"""A pass reads the control API again only when the change feed showed a change for this host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from metastack.client.http import ControlApiError
from metastack.netagent.reconcile import Report
from metastack.netagent.service import NetAgent
from metastack.tasks import cancel_and_wait
from unit.netagent.builders import config


class FakeControl:
    """Lists nothing but this host's agent; the change feed hands out what the test queues,
    else waits."""

    def __init__(self) -> None:
        self.revision = 10
        self.lists = 0
        self.feed: asyncio.Queue[list[dict[str, Any]] | Exception] = asyncio.Queue()

    async def list(self, plural: str, **_: Any) -> list[Any]:
        self.lists += 1
        return [{"host": "node1", "networks": [], "routers": []}] if plural == "agents" else []

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": "agent", **body}  # the state report

    async def changes(self, since: int = 0, wait: float = 0, limit: int = 1000) -> dict[str, Any]:
        if wait == 0:
            return {"revision": self.revision, "changes": []}
        item = await self.feed.get()
        if isinstance(item, Exception):
            raise item
        if item:
            self.revision = item[-1]["revision"]
        return {"revision": self.revision, "changes": item}

    async def close(self) -> None:
        return None


@pytest.fixture
async def agent(tmp_path: Any) -> AsyncIterator[tuple[NetAgent, FakeControl]]:
    control = FakeControl()
    netagent = NetAgent(config(state_path=str(tmp_path)), control)  # type: ignore[arg-type]
    netagent.reconciler.apply = lambda desired, full: Report()  # type: ignore[method-assign]
    feed = asyncio.create_task(netagent._feed_loop())
    await _settle()
    yield netagent, control
    feed.cancel()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _reads_of_one_pass(netagent: NetAgent, control: FakeControl) -> int:
    before = control.lists
    await netagent.reconcile(full=True)
    return control.lists - before


async def test_full_passes_reuse_the_topology_until_a_relevant_change(
    agent: tuple[NetAgent, FakeControl],
) -> None:
    netagent, control = agent
    assert await _reads_of_one_pass(netagent, control) > 0
    assert await _reads_of_one_pass(netagent, control) == 0
    control.feed.put_nowait([{"revision": 11, "resource": "instance", "network_id": None}])
    await _settle()
    assert await _reads_of_one_pass(netagent, control) == 0  # instances never shape a namespace
    control.feed.put_nowait([{"revision": 12, "resource": "port", "network_id": "n1"}])
    await _settle()
    assert await _reads_of_one_pass(netagent, control) > 0
    assert await _reads_of_one_pass(netagent, control) == 0


async def test_a_broken_feed_means_every_pass_reads(
    agent: tuple[NetAgent, FakeControl], monkeypatch: pytest.MonkeyPatch
) -> None:
    netagent, control = agent
    monkeypatch.setattr("metastack.client.feed.RETRY_DELAYS", (3600.0,))
    await _reads_of_one_pass(netagent, control)
    control.feed.put_nowait(ControlApiError(0, "control API unreachable"))
    await _settle()
    assert await _reads_of_one_pass(netagent, control) > 0
    assert await _reads_of_one_pass(netagent, control) > 0


async def test_without_a_feed_every_pass_reads(tmp_path: Any) -> None:
    control = FakeControl()
    netagent = NetAgent(config(state_path=str(tmp_path)), control)  # type: ignore[arg-type]
    netagent.reconciler.apply = lambda desired, full: Report()  # type: ignore[method-assign]
    assert await _reads_of_one_pass(netagent, control) > 0
    assert await _reads_of_one_pass(netagent, control) > 0


async def test_a_pruned_feed_makes_a_full_pass_from_a_fresh_read(
    agent: tuple[NetAgent, FakeControl],
) -> None:
    netagent, control = agent
    passes: list[bool] = []

    def apply(desired: Any, full: bool) -> Report:
        passes.append(full)
        return Report()

    netagent.reconciler.apply = apply  # type: ignore[method-assign]
    loop = asyncio.create_task(netagent._reconcile_loop())
    try:
        await _until(lambda: passes == [True])  # the first pass observes everything
        control.feed.put_nowait([{"revision": 11, "resource": "port", "network_id": "n1"}])
        await _until(lambda: passes == [True, False])  # a change: a change pass
        before = control.lists
        control.revision = 60  # the feed moved on and pruned revision 12 meanwhile
        gone = {"error": "since: pruned", "oldest_revision": 50, "revision": 60}
        control.feed.put_nowait(ControlApiError(410, "since: pruned", gone))
        await _until(lambda: passes == [True, False, True])  # resync: a full pass ...
        assert control.lists > before  # ... from the control API read again
        assert netagent.topology_revision == 60
        assert await _reads_of_one_pass(netagent, control) == 0  # following from 60 on
    finally:
        await cancel_and_wait(loop)


async def _until(predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")
