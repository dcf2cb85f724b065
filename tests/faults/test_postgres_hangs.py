"""PostgreSQL that hangs: a server that accepts but never answers, a lock held forever.

Both must end in a 503 within a bound, as a busy SQLite does, never in a request that waits
for as long as the database likes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from metastack.store.engine import POSTGRES_CONNECT_TIMEOUT_S, POSTGRES_LOCK_TIMEOUT_MS
from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

from .conftest import api_config, boot, running

LOCK_BOUND = POSTGRES_LOCK_TIMEOUT_MS / 1000 + 2.0
CONNECT_BOUND = POSTGRES_CONNECT_TIMEOUT_S + 2.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose listener accepts connections (kernel backlog) and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield int(listener.getsockname()[1])


async def test_server_that_never_answers(silent_server: int) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/postgres"
    store = SqlStore(url)
    config = api_config(url, metadata_cache_expiration=0)
    fake = {"uuid": "11111111-2222-3333-4444-555555555555", "project_id": "p"}
    try:
        async with running(config, store) as cloud:
            cloud.timeout = 60.0  # measure the API's own bound, not the client's
            started = time.monotonic()
            replies = await asyncio.gather(
                cloud.write("POST", "/v1/networks", {"project_id": "p"}),
                cloud.write("GET", "/v1/networks"),
                cloud.read(fake),
            )
            for reply in replies:
                assert reply.status == 503, (reply.status, reply.body)
                assert reply.seconds < CONNECT_BOUND, reply.seconds
            print(f"\nsilent server: 3 requests -> 503 in {time.monotonic() - started:.2f} s")
    finally:
        store.close()


@pytest.mark.postgres
async def test_revision_row_locked(postgres_schema_url: str) -> None:
    url = postgres_schema_url
    upgrade(url)
    store = SqlStore(url)
    locker = create_engine(url).connect()
    try:
        async with running(api_config(url), store) as cloud:
            instance = await boot(cloud, "p")
            revision = store.current_revision()
            held = locker.begin()
            locker.exec_driver_sql("SELECT value FROM revision_counter FOR UPDATE")
            writes = [
                cloud.write("POST", "/v1/networks", {"project_id": "p", "name": f"n{i}"})
                for i in range(8)
            ]
            written, read = await asyncio.gather(asyncio.gather(*writes), cloud.read(instance))
            for reply in written:
                assert reply.status == 503, (reply.status, reply.body)
                assert "lock" in reply.json()["error"], reply.body
                assert reply.seconds < LOCK_BOUND, reply.seconds
            assert read.status == 200, read.body
            held.rollback()
            assert store.current_revision() == revision
            await cloud.ok("POST", "/v1/networks", {"project_id": "p", "name": "after"})
            print(
                f"\nrevision row locked: {len(written)} writes -> 503 in "
                f"{max(r.seconds for r in written):.2f} s max; "
                f"a read -> 200 in {read.seconds:.2f} s"
            )
    finally:
        locker.close()
        locker.engine.dispose()
        store.close()
