"""The control API's store threads: one write lane that fails queued writes fast, a read pool."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from metastack.errors import MetastackError, StoreUnavailable

T = TypeVar("T")
READ_THREADS = 4


class WriteLane:
    """Runs store writes one at a time on a thread of their own.

    Every write transaction locks the revision counter first, so the database serializes
    them anyway; queueing them here instead keeps blocked writes from filling the thread
    pool that reads (and the metadata API) need. When a write fails because the database
    is unavailable (locked, full, down), the writes that were queued behind it fail at once
    with the same error instead of each waiting out the busy timeout again, so every write
    is answered within about one busy timeout.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="control-write")
        self._turn = asyncio.Lock()
        self._failure: StoreUnavailable | None = None
        self._failed_at = 0.0
        self._succeeded_at = 0.0

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in the lane; StoreUnavailable at once if the write ahead just failed so."""
        arrived = time.monotonic()
        async with self._turn:
            failure = self._failure
            if (
                failure is not None
                and arrived < self._failed_at
                and self._failed_at > self._succeeded_at
            ):
                raise StoreUnavailable(str(failure))
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._executor, functools.partial(work, *args))
            except StoreUnavailable as exc:
                self._failure, self._failed_at = exc, time.monotonic()
                raise
            except MetastackError:
                self._succeeded_at = time.monotonic()  # refused, but the database answered
                raise
            self._succeeded_at = time.monotonic()
            return result

    def close(self) -> None:
        """Stop the thread once the running write is done; queued ones are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def read_pool() -> ThreadPoolExecutor:
    """The threads for control API reads, apart from the loop's default pool."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="control-read")
