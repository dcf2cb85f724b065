"""The document cache when reading the change feed fails: never stale afterwards, never stuck."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from metastack.api.cache import DocumentCache
from metastack.errors import StoreUnavailable
from metastack.metadata import Documents
from metastack.metadata.model import Instance
from metastack.store.base import Change
from metastack.store.watch import RevisionSource, RevisionWatcher, SqliteSource, StoreSource
from support.metadata_fakes import FakeStore, make_instance

UUID = "11111111-2222-3333-4444-555555555555"


class FeedDown(FakeStore):
    """The revision still reads, the change feed may not (a connection dropped mid catch-up)
    or may have been pruned."""

    feed_down = False
    kept_from = 1  # the oldest revision the feed still keeps

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        if self.feed_down:
            raise StoreUnavailable("database unavailable: server closed the connection")
        return super().changes_since(max(revision, self.kept_from - 1), limit)


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


@asynccontextmanager
async def cached(store: FeedDown, source: RevisionSource) -> AsyncIterator[DocumentCache]:
    """A started document cache over `store`, following a watcher on `source`."""
    watcher = RevisionWatcher(source, 0.01)
    cache = DocumentCache(store, build, watcher, max_entries=10, max_age=300.0)
    await watcher.start()
    await cache.start()
    try:
        yield cache
    finally:
        await cache.stop()
        await watcher.close()


async def test_polling_watcher_survives_a_failed_catch_up() -> None:
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    async with cached(store, StoreSource(store)) as cache:
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


async def test_sqlite_watcher_retries_a_failed_catch_up(tmp_path: Path) -> None:
    path = tmp_path / "watched.sqlite"
    with sqlite3.connect(path) as db:  # the revision, as the store keeps it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE revision_counter (id INTEGER PRIMARY KEY, value INTEGER)")
        db.execute("INSERT INTO revision_counter VALUES (1, 1)")
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    async with cached(store, SqliteSource(str(path))) as cache:
        assert (entry := await cache.get(UUID)) is not None and entry.instance.name == "v1"
        store.feed_down = True
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        with sqlite3.connect(path) as other:  # what a commit by another connection looks like
            other.execute("UPDATE revision_counter SET value = 2")
        with pytest.raises(StoreUnavailable):
            await cache.get(UUID)
        with pytest.raises(StoreUnavailable):  # still behind: no stale v1 on the next request
            await cache.get(UUID)
        store.feed_down = False
        await eventually_named(cache, "v2", timeout=0.5)


async def test_store_down_at_start() -> None:
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    store.down = True
    async with cached(store, StoreSource(store)) as cache:  # a worker (re)started in an outage
        with pytest.raises(StoreUnavailable):
            await cache.get(UUID)
        store.down = False
        await eventually_named(cache, "v1")
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        await eventually_named(cache, "v2")


async def test_a_pruned_feed_drops_every_entry() -> None:
    store = FeedDown()
    store.put(make_instance(UUID, "p", "10.0.0.5", name="v1"))
    async with cached(store, StoreSource(store)) as cache:
        assert (entry := await cache.get(UUID)) is not None and entry.instance.name == "v1"
        store.put(dataclasses.replace(store.instances[UUID], name="v2"))
        store.put(make_instance("22222222-2222-3333-4444-555555555555", "p", "10.0.0.6"))
        store.kept_from = 3  # the change naming v2 was pruned before the cache read it
        await eventually_named(cache, "v2")
