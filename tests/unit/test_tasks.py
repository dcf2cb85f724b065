"""cancel_and_wait: how every service stops its background tasks."""

from __future__ import annotations

import asyncio

from metastack.tasks import cancel_and_wait


async def test_cancels_and_waits_for_every_task_and_skips_none() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # cleanup that must finish before the call returns
            ended.append(name)

    tasks = [asyncio.create_task(forever(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    await cancel_and_wait(None, *tasks)
    assert sorted(ended) == ["a", "b"]
    assert all(t.cancelled() for t in tasks)
    await cancel_and_wait(*tasks)  # already ended: nothing to do
