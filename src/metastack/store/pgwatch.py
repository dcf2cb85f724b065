"""The revision on PostgreSQL: read per request on a connection of its own, pushed by NOTIFY.

Two connections per worker process, apart from the store's pool, both async (psycopg 3)
so that nothing blocks the event loop:

- the *reader* answers `read()`: one prepared `SELECT` of the revision counter. Reads
  asked for while one is in flight share the next one, which starts after they were
  asked (so it still sees every write acknowledged before them): under load a worker
  sends one query per round trip, not one per request.
- the *listener* LISTENs on the revision channel and publishes every revision a write
  transaction NOTIFYs on commit. On (re)connect it LISTENs first and then reads the
  revision, so nothing committed in between is missed; a notification or a heartbeat
  read every HEARTBEAT seconds proves it alive. While it is down the watcher polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from metastack.errors import StoreError, StoreUnavailable
from metastack.store.engine import POSTGRES_CONNECT_TIMEOUT_S
from metastack.store.feed import CHANNEL, parse_payload
from metastack.store.watch import Publish

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # a revision read that takes longer fails (503), as a lock wait does
HEARTBEAT = 5.0  # seconds of silence after which the listener checks its connection
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)
REVISION = "SELECT value FROM revision_counter WHERE id = 1"
SCHEMA = "SELECT coalesce(current_schema(), '')"
LISTENER_NAME = "metastack-listen"
READER_NAME = "metastack-revision"


def connect_params(url: URL) -> dict[str, Any]:
    """psycopg.connect keyword arguments for a SQLAlchemy PostgreSQL URL."""
    params: dict[str, Any] = {
        key: value
        for key, value in (
            ("host", url.host),
            ("port", url.port),
            ("dbname", url.database),
            ("user", url.username),
            ("password", url.password),
        )
        if value is not None
    }
    # libpq keywords in the query (host=/var/run/postgresql, options, sslmode, ...).
    params.update((key, value) for key, value in url.query.items() if isinstance(value, str))
    params.setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)
    return params


def _unavailable(exc: BaseException) -> StoreError:
    if isinstance(exc, TimeoutError):
        return StoreUnavailable("database unavailable: the revision read timed out")
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, psycopg.OperationalError | OSError):
        return StoreUnavailable(f"database unavailable: {first_line}")
    return StoreError(f"database error: {first_line}")


class PostgresSource:
    """A `RevisionSource` on PostgreSQL (see the module docstring)."""

    def __init__(self, url: URL) -> None:
        self._params = connect_params(url)
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._next: asyncio.Future[int] | None = None  # the read not sent yet
        self._reading: asyncio.Task[None] | None = None
        self.listener_pid: int | None = None  # the LISTEN backend, while connected
        self.reads_sent = 0  # revision queries sent (each answers every read waiting)

    async def _connect(self, name: str) -> psycopg.AsyncConnection[Any]:
        params = {"application_name": name, **self._params}
        return await psycopg.AsyncConnection.connect(autocommit=True, **params)

    async def read(self) -> int:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_consume)
        future = self._next
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_batches())
        try:  # bounded from this call on, also when queued behind a read that hangs
            return await asyncio.wait_for(asyncio.shield(future), READ_TIMEOUT)
        except TimeoutError:
            raise _unavailable(TimeoutError()) from None

    async def _read_batches(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            try:
                revision = await self._read_once()
            except StoreError as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(revision)

    async def _read_once(self) -> int:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                if self._reader is None or self._reader.closed:
                    self._reader = await self._connect(READER_NAME)
                self.reads_sent += 1
                cursor = await self._reader.execute(REVISION, prepare=True)
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop_reader()
            raise _unavailable(exc) from exc
        return int(row[0]) if row else 0

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    async def push(self, publish: Publish, pushing: Callable[[bool], None]) -> None:
        failures = 0
        while True:
            try:
                await self._listen(publish, pushing)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if failures == 0:
                    log.warning("revision listener: %s; reconnecting", _unavailable(exc))
            finally:
                self.listener_pid = None
                pushing(False)
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
            failures += 1

    async def _listen(self, publish: Publish, pushing: Callable[[bool], None]) -> None:
        async with asyncio.timeout(READ_TIMEOUT):
            conn = await self._connect(LISTENER_NAME)
        async with conn:
            async with asyncio.timeout(READ_TIMEOUT):
                await conn.execute(f"LISTEN {CHANNEL}")  # first: then nothing is missed
                schema = await _one(conn, SCHEMA)
                publish(int(await _one(conn, REVISION) or 0))
            self.listener_pid = conn.info.backend_pid
            pushing(True)
            log.debug("revision listener: LISTEN on backend %d", self.listener_pid)
            while True:
                async for note in conn.notifies(timeout=HEARTBEAT):
                    found = parse_payload(note.payload)
                    if found is not None and found[0] == schema:
                        publish(found[1])
                async with asyncio.timeout(READ_TIMEOUT):  # silence: is it still there?
                    publish(int(await _one(conn, REVISION) or 0))

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        await self._drop_reader()


async def _one(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    return row[0] if row else None


def _consume(future: asyncio.Future[int]) -> None:
    # A read whose every asker gave up: its error is nobody's to log.
    if not future.cancelled():
        future.exception()
