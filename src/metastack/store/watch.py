"""One revision watcher per API worker: the read path's freshness check and the push.

The watcher answers two questions for everything in a worker that shows the store's
state (the metadata API's document cache, the control API's change-feed long polls):

- `current()`: the store's revision as of a moment after the call began. A read that
  starts after a write was acknowledged, by any process on any node, sees that write's
  revision, so a cache that catches up to it never serves the old document.
- `wait_beyond(since)` and `subscribe()`: wake when the revision moves, without asking
  the store in a loop: pushed by PostgreSQL (LISTEN/NOTIFY); polled every
  `poll_interval` only while no push arrives (SQLite, a listener that lost its
  connection) and someone waits or subscribes.

Where the revision comes from is a `RevisionSource`: SQLite's `PRAGMA data_version`
(a commit by any connection changes it; microseconds to check), PostgreSQL's
`metastack.store.pgwatch`, or any store's `current_revision` (tests, fakes); the
`metastack.store.watchers` module picks one for a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from metastack.errors import StoreError, StoreUnavailable
from metastack.tasks import cancel_and_wait

if TYPE_CHECKING:
    from metastack.store.base import MetadataStore

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.05
Publish = Callable[[int], None]
Subscriber = Callable[[int], Awaitable[None]]


class RevisionSource(Protocol):
    """Reads the store's revision; may push it as it moves."""

    async def read(self) -> int:
        """The revision committed before this call began, or a later one."""

    async def push(self, publish: Publish, pushing: Callable[[bool], None]) -> None:
        """Run until cancelled, calling `publish(revision)` as it moves and `pushing(live)`
        when pushes start or stop arriving; return at once if this source cannot push."""

    async def close(self) -> None:
        """Release connections."""


class StoreSource:
    """Any store's `current_revision`, read on a thread; no push."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    async def read(self) -> int:
        return await asyncio.to_thread(self._store.current_revision)

    async def push(self, publish: Publish, pushing: Callable[[bool], None]) -> None:
        return None

    async def close(self) -> None:
        return None


class SqliteSource:
    """`PRAGMA data_version` on a private connection: the revision is read again only when
    another connection committed since the last read; both are microseconds, on the loop."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._version: int | None = None
        self._revision = 0

    async def read(self) -> int:
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:  # read the version first: a commit after it shows
                row = self._conn.execute("SELECT value FROM revision_counter WHERE id = 1")
                found = row.fetchone()
                self._revision = int(found[0]) if found else 0
                self._version = version
        except sqlite3.Error as exc:
            self._version = None
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return self._revision

    async def push(self, publish: Publish, pushing: Callable[[bool], None]) -> None:
        return None

    async def close(self) -> None:
        self._conn.close()


class RevisionWatcher:
    """The latest revision this process knows of, who waits for it to move, and who hears
    when it does. Create, `start()` in the loop that uses it, `close()` at the end."""

    def __init__(
        self, source: RevisionSource, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> None:
        self.source = source
        self.known: int | None = None
        self.pushing = False
        self._interval = poll_interval
        self._moved = asyncio.Event()
        self._poke = asyncio.Event()
        self._waiters = 0
        self._subscribers: list[_Subscription] = []
        self._poller: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._released = False

    async def start(self) -> None:
        """Begin following the store (a store that is down only delays this)."""
        self._pusher = asyncio.create_task(self.source.push(self._publish, self._set_pushing))
        self._ensure_polling()

    async def close(self) -> None:
        """Stop following; release the source's connections."""
        self.release()
        await cancel_and_wait(self._pusher, self._poller, *(s.task for s in self._subscribers))
        await self.source.close()

    def release(self) -> None:
        """Answer every waiter now and wait no more (server shutdown: long polls must not
        hold a stopping worker for their whole wait)."""
        self._released = True
        self._moved.set()

    async def current(self) -> int:
        """The store's revision, read now (StoreError when it cannot be), or the one a push
        brought meanwhile if that is newer."""
        revision = await self.source.read()
        self._publish(revision)
        return max(revision, self.known or 0)

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(revision)` whenever a push or a poll shows the revision moved
        (one call at a time; a StoreError it raises is logged and retried on the next)."""
        self._subscribers.append(_Subscription(callback))
        self._ensure_polling()

    def poke(self) -> None:
        """A write committed in this process: poll now rather than at the next interval."""
        self._poke.set()

    async def wait_beyond(self, since: int, timeout: float) -> bool:
        """True once the known revision is above `since`; False when `timeout` ran out
        first or the watcher was released."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        self._ensure_polling()
        try:
            while self.known is None or self.known <= since:
                remaining = deadline - loop.time()
                if self._released or remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._moved.wait(), remaining)
                except TimeoutError:
                    return False
            return True
        finally:
            self._waiters -= 1

    def _publish(self, revision: int) -> None:
        # Never backwards: a read that began before a push arrived may end after it.
        if self.known is not None and revision <= self.known:
            return
        self.known = revision
        self._moved.set()
        self._moved = asyncio.Event()
        for subscription in self._subscribers:
            subscription.kick(revision)

    def _set_pushing(self, live: bool) -> None:
        if live != self.pushing:
            log.info("revision push %s", "live" if live else "lost; polling meanwhile")
        self.pushing = live
        self._ensure_polling()

    def _wanted(self) -> bool:
        return not self.pushing and (self._waiters > 0 or bool(self._subscribers))

    def _ensure_polling(self) -> None:
        if self._wanted() and (self._poller is None or self._poller.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: start() polls
                self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        failing = False
        while self._wanted():
            self._poke.clear()
            try:
                await self.current()
            except StoreError as exc:
                if not failing:
                    log.warning("cannot read the revision: %s", exc)
                failing = True
            else:
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._interval)


class _Subscription:
    """One subscriber's calls: never two at once; a revision that moves during a call
    gets one more call after it."""

    def __init__(self, callback: Subscriber) -> None:
        self._callback = callback
        self._pending: int | None = None
        self.task: asyncio.Task[None] | None = None

    def kick(self, revision: int) -> None:
        self._pending = revision
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending is not None:
            revision, self._pending = self._pending, None
            try:
                await self._callback(revision)
            except StoreError as exc:
                log.warning("following revision %d failed: %s", revision, exc)
