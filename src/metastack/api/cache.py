"""Per-instance document cache, invalidated by the store's change feed.

Rendered documents are kept per instance (bounded, LRU) and dropped as soon as the
change feed reports a change to the instance, one of its ports, or any network
object. A *watcher* tells the request path cheaply whether the store moved on:

- SQLite: ``PRAGMA data_version`` on a private connection changes whenever another
  connection commits; checking it costs microseconds, so every request checks it and
  an update is visible on the very next request, from any process on the host.
- Other databases: a background task polls the store's revision (``poll_interval``),
  so an update is visible within that interval on every API node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import make_url

from metastack.errors import StoreError
from metastack.heap import freeze_heap
from metastack.metadata import Documents
from metastack.metadata.model import Instance
from metastack.store.base import Change, MetadataStore
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

WARM_INTERVAL = 0.2  # seconds between looks for instances to pre-render

# Change resources whose effect on documents cannot be narrowed to one instance.
_GLOBAL_RESOURCES = frozenset({"network", "subnet", "router", "project"})


class Watcher(Protocol):
    """Says whether the store may have changed since the last :meth:`mark_seen`."""

    def maybe_changed(self) -> bool: ...

    def mark_seen(self) -> None: ...

    async def start(self, on_change: Callable[[], Awaitable[None]]) -> None: ...

    async def stop(self) -> None: ...


class SqliteWatcher:
    """Per-request ``PRAGMA data_version`` check on a private read connection."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._seen = self._read()

    def _read(self) -> int:
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def maybe_changed(self) -> bool:
        try:
            return self._read() != self._seen
        except sqlite3.Error:
            return True  # cannot tell: treat as changed, the catch-up will report the error

    def mark_seen(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._seen = self._read()

    async def start(self, on_change: Callable[[], Awaitable[None]]) -> None:
        return None

    async def stop(self) -> None:
        self._conn.close()


class PollingWatcher:
    """Polls the store's revision in the background; for client/server databases."""

    def __init__(self, store: MetadataStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def maybe_changed(self) -> bool:
        return self._dirty

    def mark_seen(self) -> None:
        self._dirty = False

    async def start(self, on_change: Callable[[], Awaitable[None]]) -> None:
        self._task = asyncio.create_task(self._poll(on_change))

    async def _poll(self, on_change: Callable[[], Awaitable[None]]) -> None:
        last: int | None = None
        while True:
            try:
                revision = await asyncio.to_thread(self._store.current_revision)
            except StoreError as exc:
                log.warning("revision poll failed: %s", exc)
            else:
                if revision != last:  # the first poll too: changes may predate it
                    self._dirty = True
                    try:
                        await on_change()
                    except StoreError as exc:  # `last` stays behind: the next poll retries
                        log.warning("reading the change feed failed: %s", exc)
                        await asyncio.sleep(self._interval)
                        continue
                last = revision
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)


def sqlite_watcher(database_url: str) -> SqliteWatcher | None:
    """A data_version watcher when the URL names a SQLite file, else None."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return SqliteWatcher(str(url.database))
    return None


def make_watcher(database_url: str, store: MetadataStore, poll_interval: float) -> Watcher:
    """Pick the watcher for a database URL: data_version for SQLite files, polling otherwise."""
    found = sqlite_watcher(database_url)
    return found if found is not None else PollingWatcher(store, poll_interval)


@dataclass(slots=True)
class Entry:
    instance: Instance
    documents: Documents
    loaded_at: float


class DocumentCache:
    """Bounded LRU of rendered documents per instance uuid, kept true by the change feed."""

    def __init__(
        self,
        store: MetadataStore,
        build: Callable[[Instance], Documents],
        watcher: Watcher,
        *,
        max_entries: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
        prewarm: bool = False,
    ) -> None:
        self._store = store
        self._build = build
        self._watcher = watcher
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._revision = 0
        self._behind = False  # a catch-up failed: changes may be unread, entries may be stale
        self._baseline = False  # the revision the entries are known to be current at was read
        self._catching_up: asyncio.Lock | None = None
        self._prewarm = prewarm
        self._to_warm: set[str] = set()  # changed instances to render before anyone asks
        self._warmer: asyncio.Task[None] | None = None
        self.hits = 0
        self.misses = 0

    async def start(self) -> None:
        """Learn the current revision and start the watcher; a store that is down at start
        only delays that to the first request after it comes back."""
        self._catching_up = asyncio.Lock()
        try:
            self._revision = await asyncio.to_thread(self._store.current_revision)
            self._baseline = True
        except StoreError as exc:
            log.warning("store unavailable at start (%s); requests retry it", exc)
            self._behind = True
        self._watcher.mark_seen()
        await self._watcher.start(self.catch_up)
        if self._prewarm and self._max_age > 0:
            self._warmer = asyncio.create_task(self._warm_loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._warmer)
        await self._watcher.stop()

    async def _warm_loop(self) -> None:
        """Render instances the feed says were created or changed, before their guests ask.

        Instances are typically created seconds before they boot: rendering them then
        takes the store reads and the rendering out of the boot storm's first requests.
        """
        while True:
            await asyncio.sleep(WARM_INTERVAL)
            try:
                if self._behind or self._watcher.maybe_changed():
                    await self.catch_up()
                warmed = 0
                while self._to_warm:
                    uuid = self._to_warm.pop()
                    if uuid not in self._entries:
                        await self.get(uuid)
                        warmed += 1
                if warmed:
                    freeze_heap()  # the new documents are long-lived: out of the GC's walk
            except StoreError as exc:
                log.warning("pre-rendering paused: %s", exc)

    async def get(self, uuid: str) -> Entry | None:
        """The cached entry of an instance, loading and rendering it on a miss."""
        if self._behind or self._watcher.maybe_changed():
            await self.catch_up()
        entry = self._entries.get(uuid)
        if entry is not None and (self._clock() - entry.loaded_at) < self._max_age:
            self._entries.move_to_end(uuid)
            self.hits += 1
            return entry
        self.misses += 1
        revision_before = self._revision
        instance = await asyncio.to_thread(self._store.load_instance, uuid)
        if instance is None:
            self._entries.pop(uuid, None)
            return None
        entry = Entry(instance, self._build(instance), self._clock())
        # A change that landed while we were loading may not be in this snapshot's
        # view of the cache: store the entry only if no catch-up ran meanwhile.
        if self._max_age > 0 and revision_before == self._revision:
            self._entries[uuid] = entry
            self._entries.move_to_end(uuid)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return entry

    def evict(self, uuid: str) -> None:
        self._entries.pop(uuid, None)

    async def catch_up(self) -> None:
        """Read the changes since the last seen revision and drop what they touch."""
        assert self._catching_up is not None, "DocumentCache.start() was not awaited"
        async with self._catching_up:
            self._watcher.mark_seen()
            self._behind = True  # until the feed has been read to its end
            if not self._baseline:
                self._revision = await asyncio.to_thread(self._store.current_revision)
                self._entries.clear()
                self._baseline = True
            while True:
                changes = await asyncio.to_thread(self._store.changes_since, self._revision)
                if not changes:
                    self._behind = False
                    return
                self.apply(changes)

    def apply(self, changes: list[Change]) -> None:
        """Drop the entries a batch of changes touches and advance the revision."""
        for change in changes:
            if change.instance_id:
                self._entries.pop(change.instance_id, None)
                gone = change.resource == "instance" and change.action == "delete"
                if self._prewarm and not gone and len(self._to_warm) < self._max_entries:
                    self._to_warm.add(change.instance_id)
            elif change.resource in _GLOBAL_RESOURCES or change.resource == "port":
                if self._prewarm:
                    # Rendered again before their guests ask, as after their own changes.
                    room = self._max_entries - len(self._to_warm)
                    self._to_warm.update(list(self._entries)[-room:] if room > 0 else [])
                self._entries.clear()
            self._revision = max(self._revision, change.revision)

    def __len__(self) -> int:
        return len(self._entries)
