"""The revision watcher: read-your-writes reads, pushes, polls, and who hears of what."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text

from metastack.store.migrate import upgrade
from metastack.store.specs import ProjectCreate
from metastack.store.sql import SqlStore
from metastack.store.watch import RevisionWatcher
from metastack.store.watchers import watcher_for


@asynccontextmanager
async def watching(store: SqlStore) -> AsyncIterator[RevisionWatcher]:
    watcher = watcher_for(store, poll_interval=0.05)
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.close()


async def write(store: SqlStore, name: str) -> None:
    await asyncio.to_thread(store.create_project, ProjectCreate(name=name))


async def test_reads_see_every_acknowledged_write_at_once(sql_store: SqlStore) -> None:
    async with watching(sql_store) as watcher:
        for n in range(1, 21):
            await write(sql_store, f"p{n}")
            assert await watcher.current() == n  # no waiting for a push or a poll


async def test_waiters_and_subscribers_hear_of_writes(
    sql_store: SqlStore, database_url: str
) -> None:
    heard: list[int] = []

    async def hear(revision: int) -> None:
        heard.append(revision)

    other = SqlStore(database_url)  # another process or node, as far as the watcher knows
    try:
        async with watching(sql_store) as watcher:
            assert await watcher.current() == 0
            watcher.subscribe(hear)
            await asyncio.sleep(0.2)
            await write(other, "warm")  # the other store's first connection, made here
            assert await watcher.wait_beyond(0, 10)
            heard.clear()
            woke_at: list[float] = []
            waiter = asyncio.create_task(watcher.wait_beyond(1, 10))
            waiter.add_done_callback(lambda _: woke_at.append(time.monotonic()))
            await asyncio.sleep(0.1)
            assert not waiter.done()
            await write(other, "elsewhere")
            acknowledged = time.monotonic()
            assert await waiter
            woke = woke_at[0] - acknowledged
            for _ in range(100):
                if heard:
                    break
                await asyncio.sleep(0.01)
            assert heard == [2]
            assert not await watcher.wait_beyond(2, 0.2)  # nothing more: times out
    finally:
        other.close()
    assert woke < 1.0
    print(f"\n{sql_store.engine.dialect.name}: a waiter woke {woke * 1000:.1f} ms after the ack")


@pytest.mark.postgres
async def test_postgres_pushes_and_keeps_schemas_apart(postgres_schema_url: str) -> None:
    upgrade(postgres_schema_url)
    store = SqlStore(postgres_schema_url)
    try:
        async with watching(store) as watcher:
            for _ in range(100):
                if watcher.pushing:
                    break
                await asyncio.sleep(0.02)
            assert watcher.pushing  # LISTENing: no polling at all
            await write(store, "ours")
            assert await watcher.wait_beyond(0, 5)
            assert watcher.known == 1
            # Another schema in the same database NOTIFYs on the same channel.
            with store.engine.begin() as conn:
                conn.execute(text("SELECT pg_notify('metastack_revisions', 'elsewhere 99')"))
            assert not await watcher.wait_beyond(1, 0.3)
            assert watcher.known == 1
    finally:
        store.close()


@pytest.mark.postgres
async def test_postgres_reads_asked_together_share_a_query(postgres_schema_url: str) -> None:
    from metastack.store.pgwatch import PostgresSource

    upgrade(postgres_schema_url)
    store = SqlStore(postgres_schema_url)
    try:
        async with watching(store) as watcher:
            assert isinstance(watcher.source, PostgresSource)
            await watcher.current()
            before = watcher.source.reads_sent
            revisions = await asyncio.gather(*(watcher.current() for _ in range(200)))
            sent = watcher.source.reads_sent - before
            await write(store, "after")
            assert await watcher.current() == 1  # asked after the write: sees it
    finally:
        store.close()
    print(f"\n200 concurrent reads of the revision: {sent} queries")
    assert revisions == [0] * 200
    assert 1 <= sent <= 2  # the one in flight, if any, and the one after it
