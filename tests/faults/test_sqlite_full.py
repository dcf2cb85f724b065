"""SQLite on a full disk: writes answer 503 saying so and leave nothing behind; reads go on."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

from .conftest import api_config, boot, fill, running

pytestmark = pytest.mark.root

USER_DATA = base64.b64encode(os.urandom(45 * 1024)).decode()  # incompressible, near the limit


async def test_full_disk(small_tmpfs: Path) -> None:
    url = f"sqlite:///{small_tmpfs / 'metastack.sqlite'}"
    upgrade(url)
    store = SqlStore(url)
    try:
        async with running(api_config(url), store) as cloud:
            cached = await boot(cloud, "cached", "10.0.0.0/24")
            uncached = await boot(cloud, "uncached", "10.1.0.0/24")
            network = (await cloud.ok("GET", "/v1/networks"))["networks"][0]
            assert (await cloud.read(cached)).status == 200
            filler = fill(small_tmpfs)

            created: list[str] = []
            refusals = []
            for attempt in range(40):  # the WAL may still have room for a few writes
                revision = store.current_revision()
                body = {"name": f"big{attempt}", "project_id": "p", "user_data": USER_DATA}
                reply = await cloud.write("POST", "/v1/instances", body)
                assert reply.status in (201, 503), (reply.status, reply.body)
                if reply.status == 201:
                    created.append(reply.json()["uuid"])
                    continue
                refusals.append(reply)
                assert "full" in reply.json()["error"], reply.body
                assert reply.seconds < 2.0, reply.seconds
                assert store.current_revision() == revision  # nothing half-written
                if len(refusals) >= 3:
                    break
            assert refusals, "the disk never filled up"
            names = {i["name"] for i in (await cloud.ok("GET", "/v1/instances"))["instances"]}
            assert names == {"vm-cached", "vm-uncached"} | {f"big{n}" for n in range(len(created))}
            small = await cloud.write("PATCH", f"/v1/networks/{network['id']}", {"mtu": 1400})
            assert small.status in (200, 503), small.body

            password = await cloud.read(
                uncached, "/openstack/latest/password", method="POST", data=b"secret"
            )
            assert password.status in (200, 503), password.body
            stored = store.get_password(uncached["uuid"])
            assert stored == ("secret" if password.status == 200 else ""), stored

            for instance in (cached, uncached):  # reads go on from the full disk
                reply = await cloud.read(instance)
                assert reply.status == 200, reply.body
                assert reply.json()["uuid"] == instance["uuid"]
            assert (await cloud.write("GET", f"/v1/instances/{uncached['uuid']}")).status == 200
            print(
                f"full disk: {len(created)} writes still fitted, {len(refusals)} refused with "
                f"503 {refusals[0].json()['error']!r}; password POST {password.status}; reads 200"
            )

            filler.unlink()
            freed = time.monotonic()
            body = {"name": "after", "project_id": "p", "user_data": USER_DATA}
            after = await cloud.ok("POST", "/v1/instances", body)
            assert (await cloud.read(after)).status == 200
            await cloud.ok("PATCH", f"/v1/networks/{network['id']}", {"mtu": 1450})
            print(f"space freed: writes succeed again after {time.monotonic() - freed:.2f} s")
    finally:
        store.close()
