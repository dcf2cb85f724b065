"""The revision on PostgreSQL: read per request on a connection of its own, pushed by NOTIFY.

Two connections per worker process, apart from the store's pool, both driven by the
event loop (psycopg 3, and libpq's own calls for the reader), so nothing blocks it:

- the *reader* answers `read()`: one prepared `SELECT` of the revision counter. Reads
  asked for while one is in flight share the next one, which starts after they were
  asked (so it still sees every write acknowledged before them): under load a worker
  sends one query per round trip, not one per request. A read that fails or takes more
  than READ_TIMEOUT fails the reads queued behind it too, so none waits longer.
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
from psycopg import pq
from sqlalchemy.engine import URL

from metastack.errors import StoreError, StoreUnavailable
from metastack.store.engine import POSTGRES_CONNECT_TIMEOUT_S
from metastack.store.feed import CHANNEL, parse_payload
from metastack.store.watch import Publish
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # a revision read that takes longer fails (503), as a lock wait does
HEARTBEAT = 2.0  # seconds of silence after which the listener checks its connection
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)
REVISION = "SELECT value FROM revision_counter WHERE id = 1"
STATEMENT = b"metastack_revision"
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
        self._reader: _Reader | None = None
        self._waiting: list[asyncio.Future[int]] = []  # reads asked for, not sent yet
        self._reading: asyncio.Task[None] | None = None
        self._asked: asyncio.Future[None] | None = None  # set when a read is asked for
        self.listener_pid: int | None = None  # the LISTEN backend, while connected
        self.reads_sent = 0  # revision queries sent (each answers every read waiting)

    async def _connect(self, name: str) -> psycopg.AsyncConnection[Any]:
        params = {"application_name": name, **self._params}
        return await psycopg.AsyncConnection.connect(autocommit=True, **params)

    async def read(self) -> int:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiting.append(waiter)
        if self._reading is None:
            self._reading = loop.create_task(self._read_batches())
        elif self._asked is not None and not self._asked.done():
            self._asked.set_result(None)
        return await waiter

    async def _read_batches(self) -> None:
        """Runs as long as the source: one query for all the reads asked for before it."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._asked = loop.create_future()
                await self._asked
            batch, self._waiting = self._waiting, []
            try:
                revision = await self._read_once()
            except StoreError as exc:
                # The reads asked for meanwhile would wait behind the same trouble (a hung
                # or dropped server): they fail now too, so none waits past READ_TIMEOUT.
                batch, self._waiting = batch + self._waiting, []
                for waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in batch:
                if not waiter.done():  # its request may have been cancelled
                    waiter.set_result(revision)

    async def _read_once(self) -> int:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                if self._reader is None:
                    self._reader = _Reader(await self._connect(READER_NAME))
                self.reads_sent += 1
                return await self._reader.revision()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop_reader()
            raise _unavailable(exc) from exc

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
                if self.listener_pid is not None:
                    failures = 0  # it was listening: a new outage, retried at once
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
        await cancel_and_wait(self._reading)
        self._reading = None
        await self._drop_reader()


class _Reader:
    """The reader connection, spoken to in libpq's own calls: a prepared statement, no
    cursor, no type adaptation; the event loop waits on its socket. A quarter of the CPU
    and the time of a psycopg `execute` per read."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._prepared = False

    async def revision(self) -> int:
        if not self._prepared:
            self._pg.send_prepare(STATEMENT, REVISION.encode())
            await self._result(pq.ExecStatus.COMMAND_OK)
            self._prepared = True
        self._pg.send_query_prepared(STATEMENT, None)
        result = await self._result(pq.ExecStatus.TUPLES_OK)
        value = result.get_value(0, 0) if result.ntuples else None
        return int(value) if value else 0

    async def _result(self, expected: pq.ExecStatus) -> pq.abc.PGresult:
        pg = self._pg
        while pg.flush():  # 1: some of the query is still to be sent
            await self._ready(writable=True)
        while True:
            pg.consume_input()  # OperationalError when the connection is gone
            if not pg.is_busy():
                break
            await self._ready(writable=False)
        result = pg.get_result()
        while pg.get_result() is not None:  # the end of this query's results
            pass
        if result is None or result.status != expected:
            message = result.error_message if result is not None else b"no result"
            raise psycopg.DatabaseError(message.decode(errors="replace").strip())
        return result

    async def _ready(self, *, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._pg.socket
        if writable:
            loop.add_writer(fd, _wake, ready)
        else:
            loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            if writable:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    async def close(self) -> None:
        await self._conn.close()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _one(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    return row[0] if row else None
