"""The document cache when reading the change feed fails: never stale afterwards, never stuck."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from metastack.api.cache import DocumentCache, PollingWatcher, SqliteWatcher
from metastack.errors import StoreUnavailable
from metastack.metadata import Documents
from metastack.metadata.model import Instance
from metastack.store.base import Change
from support.metadata_fakes import FakeStore, make_instance

UUID = "11111111-2222-3333-4444-555555555555"


class FeedDown(FakeStore):
    """The revision still reads, the change feed does not (a connection dropped mid catch-up)."""

    feed_down = False

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        if self.feed_down:
            raise StoreUnavailable("database unavailable: server closed the connection")
        return super().changes_since(revision, limit)


def build(instance: Instance) -> Documents:
    return Documents.__new__(Documents)  # the cache never looks inside


async def eventually_named(cache: DocumentCache, name: str, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            entry = await cache.get(UUID)
        except StoreUnavailable:
            entry = None
        if entry is not None and entry.instance.name == name:
            return
        assert asyncio.get_running_loop().time() < deadline, "still stale"
        await asyncio.sleep(0.02)


async def test_polling_watcher_survives_a_failed_catch_up() -> None:
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    watcher = PollingWatcher(store, 0.01)
    cache = DocumentCache(store, build, watcher, max_entries=10, max_age=300.0)
    await cache.start()
    try:
        assert (entry := await cache.get(UUID)) is not None and entry.instance.name == "v1"
        store.feed_down = True
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        await asyncio.sleep(0.1)  # several polls see the new revision and fail to catch up
        for _ in range(5):  # behind the feed: no stale v1 while the change cannot be read
            with pytest.raises(StoreUnavailable):
                await cache.get(UUID)
        store.feed_down = False
        await eventually_named(cache, "v2")
        store.put(dataclasses.replace(store.instances[UUID], name="v3"))
        await eventually_named(cache, "v3")  # the poller still runs
    finally:
        await cache.stop()


async def test_sqlite_watcher_retries_a_failed_catch_up(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "watched.sqlite"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    cache = DocumentCache(store, build, SqliteWatcher(str(path)), max_entries=10, max_age=300.0)
    await cache.start()
    try:
        assert (entry := await cache.get(UUID)) is not None and entry.instance.name == "v1"
        store.feed_down = True
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        with sqlite3.connect(path) as other:  # what a commit by another connection looks like
            other.execute("CREATE TABLE IF NOT EXISTS bump (x)")
        with pytest.raises(StoreUnavailable):
            await cache.get(UUID)
        with pytest.raises(StoreUnavailable):  # still behind: no stale v1 on the next request
            await cache.get(UUID)
        store.feed_down = False
        await eventually_named(cache, "v2", timeout=0.5)
    finally:
        await cache.stop()


async def test_store_down_at_start() -> None:
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    store.down = True
    cache = DocumentCache(store, build, PollingWatcher(store, 0.01), max_entries=10, max_age=300.0)
    await cache.start()  # a worker (re)started during an outage still comes up
    try:
        with pytest.raises(StoreUnavailable):
            await cache.get(UUID)
        store.down = False
        await eventually_named(cache, "v1")
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        await eventually_named(cache, "v2")
    finally:
        await cache.stop()
