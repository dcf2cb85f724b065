"""SQLite locked by another connection past the busy timeout: writes 503, reads go on, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from metastack.store.engine import SQLITE_BUSY_TIMEOUT_MS
from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

from .conftest import Reply, api_config, boot, running

BUSY = SQLITE_BUSY_TIMEOUT_MS / 1000
BOUND = BUSY + 2.0  # a write may wait for the busy timeout, plus scheduling slack
WRITERS = 10  # more than a small machine's default thread pool has threads


async def test_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "metastack.sqlite"
    url = f"sqlite:///{path}"
    upgrade(url)
    store = SqlStore(url)
    try:
        async with running(api_config(url), store) as cloud:
            cached = await boot(cloud, "cached", "10.0.0.0/24")
            uncached = await boot(cloud, "uncached", "10.1.0.0/24")
            assert (await cloud.read(cached)).status == 200
            revision = store.current_revision()

            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            locker.execute("UPDATE revision_counter SET value = value")
            locked_at = time.monotonic()
            writes = [
                cloud.write("POST", "/v1/networks", {"project_id": "p", "name": f"n{i}"})
                for i in range(WRITERS)
            ]
            writes.append(cloud.write("PATCH", f"/v1/instances/{cached['uuid']}", {"name": "x"}))
            writes.append(cloud.write("DELETE", f"/v1/instances/{uncached['uuid']}"))
            reads = [
                cloud.read(cached),
                cloud.read(uncached),
                cloud.read(uncached, "/latest/meta-data/"),
            ]

            async def read_later() -> list[Reply]:
                await asyncio.sleep(0.2)  # the writes are waiting on the lock by now
                return list(await asyncio.gather(*reads))

            written, read = await asyncio.gather(asyncio.gather(*writes), read_later())
            held = time.monotonic() - locked_at
            assert held > BUSY, "the lock must outlive the busy timeout"

            for reply in written:
                assert reply.status == 503, (reply.status, reply.body)
                assert "database" in reply.json()["error"]
                assert reply.seconds < BOUND, reply.seconds
            for reply in read:  # WAL: a writer's lock does not stop readers
                assert reply.status == 200, (reply.status, reply.body)
                assert reply.seconds < BOUND, reply.seconds
            print(
                f"locked {held:.1f} s: {len(written)} writes -> 503 in "
                f"{max(r.seconds for r in written):.2f} s max; {len(read)} reads -> 200 in "
                f"{max(r.seconds for r in read):.2f} s max"
            )

            locker.execute("ROLLBACK")
            locker.close()
            assert store.current_revision() == revision  # nothing half-written
            released_at = time.monotonic()
            await cloud.ok("POST", "/v1/networks", {"project_id": "p", "name": "after"})
            await cloud.ok("PATCH", f"/v1/instances/{cached['uuid']}", {"name": "renamed"})
            body = (await cloud.read(cached)).json()
            assert body["name"] == "renamed"
            assert (await cloud.read(uncached)).status == 200
            print(f"recovered in {time.monotonic() - released_at:.2f} s")
    finally:
        store.close()
