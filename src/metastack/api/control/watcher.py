"""One revision poller per process: wakes every change-feed request waiting for a change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from metastack.errors import StoreError
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.05


class RevisionWatcher:
    """While at least one request waits, polls the store's revision every `interval` seconds
    (the writer may be another process or node) and wakes all waiters when it moves.
    Writes made through this process call `poke()` to have it polled at once."""

    def __init__(
        self, read_revision: Callable[[], Awaitable[int]], interval: float = DEFAULT_POLL_INTERVAL
    ) -> None:
        self._read_revision = read_revision
        self._interval = interval
        self._revision: int | None = None
        self._moved = asyncio.Event()
        self._poke = asyncio.Event()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None
        self._released = False

    def release(self) -> None:
        """Answer every waiter now and wait no more (server shutdown: long-polls must not
        hold a stopping worker for their whole wait)."""
        self._released = True
        self._moved.set()

    async def wait_beyond(self, since: int, timeout: float) -> bool:
        """True once a poll saw a revision above `since`; False when `timeout` ran out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        self._ensure_polling()
        try:
            while self._revision is None or self._revision <= since:
                if self._released:
                    return False
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                moved = self._moved
                try:
                    await asyncio.wait_for(moved.wait(), remaining)
                except TimeoutError:
                    return False
            return True
        finally:
            self._waiters -= 1

    def poke(self) -> None:
        """Poll now rather than at the next interval (a write just committed here)."""
        self._poke.set()

    def _ensure_polling(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self._waiters > 0:
            self._poke.clear()
            try:
                revision = await self._read_revision()
            except StoreError as exc:
                log.warning("change feed: cannot read the revision: %s", exc)
            else:
                if revision != self._revision:
                    self._revision = revision
                    self._moved.set()
                    self._moved = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._interval)

    async def close(self) -> None:
        """Stop polling (application cleanup)."""
        await cancel_and_wait(self._task)
        self._task = None
