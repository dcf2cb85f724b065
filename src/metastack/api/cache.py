"""Per-instance document cache, kept true by the store's change feed.

Rendered documents are kept per instance (bounded, LRU) and dropped as soon as the
change feed reports a change to the instance, one of its ports, or any network
object. Every request first asks the worker's revision watcher for the store's current
revision (SQLite: `PRAGMA data_version`, microseconds; PostgreSQL: one prepared query on
the watcher's own connection, shared by the requests that arrive while it runs) and
catches up to it before answering: a request that starts after an update was
acknowledged, by any worker on any node, never gets the old document. Pushes (NOTIFY)
and polls make the cache catch up in the background too, so requests rarely wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from metastack.errors import StoreError
from metastack.heap import freeze_heap
from metastack.metadata import Documents
from metastack.metadata.model import Instance
from metastack.store.base import Change, MetadataStore
from metastack.store.watch import RevisionWatcher
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

WARM_INTERVAL = 0.2  # seconds between looks for instances to pre-render

# Change resources whose effect on documents cannot be narrowed to one instance.
_GLOBAL_RESOURCES = frozenset({"network", "subnet", "router", "project"})


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
        watcher: RevisionWatcher,
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
        """Learn the current revision and follow the watcher; a store that is down at start
        only delays that to the first request after it comes back."""
        self._catching_up = asyncio.Lock()
        try:
            self._revision = await self._watcher.current()
            self._baseline = True
        except StoreError as exc:
            log.warning("store unavailable at start (%s); requests retry it", exc)
            self._behind = True
        self._watcher.subscribe(self.catch_up)
        if self._prewarm and self._max_age > 0:
            self._warmer = asyncio.create_task(self._warm_loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._warmer)

    async def _warm_loop(self) -> None:
        """Render instances the feed says were created or changed, before their guests ask.

        Instances are typically created seconds before they boot: rendering them then
        takes the store reads and the rendering out of the boot storm's first requests.
        """
        while True:
            await asyncio.sleep(WARM_INTERVAL)
            try:
                if self._behind:
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
        """The cached entry of an instance, current as of the store's revision when the
        call began; loading and rendering it on a miss."""
        revision = await self._watcher.current()
        if self._behind or revision > self._revision:
            await self.catch_up(revision)
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

    async def catch_up(self, target: int | None = None) -> None:
        """Read the changes up to revision `target` (the current one when not given) and
        drop what they touch; drop everything if the changes after ours were pruned."""
        assert self._catching_up is not None, "DocumentCache.start() was not awaited"
        async with self._catching_up:
            if target is None:
                target = await self._watcher.current()
            if not self._behind and target <= self._revision:
                return  # another caller caught up while we waited for the lock
            self._behind = True  # until the feed has been read up to the target
            if not self._baseline:
                self._entries.clear()
                self._revision = target
                self._baseline = True
            while self._revision < target:
                changes = await asyncio.to_thread(self._store.changes_since, self._revision)
                if not changes or changes[0].revision != self._revision + 1:
                    # Pruned past our revision: what changed in between is unknown.
                    self._entries.clear()
                    self._revision = changes[0].revision - 1 if changes else target
                    continue
                self.apply(changes)
            self._behind = False

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
