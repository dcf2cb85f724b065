"""Password endpoint abuse: the documented 4xx (or the document), and nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from metastack.store.sql import SqlStore

from .conftest import Cloud, Reply, api_config, boot, running

PASSWORD = "/openstack/latest/password"


@pytest.fixture
async def cloud(sql_store: SqlStore, database_url: str) -> AsyncIterator[Cloud]:
    async with running(api_config(database_url), sql_store) as cloud:
        yield cloud


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length)."""
    sent = 0
    while sent < total:
        yield b"p" * min(size, total - sent)
        sent += size


async def unchanged(
    cloud: Cloud, instance: dict[str, Any], path: str, status: int, **kw: Any
) -> Reply:
    """The request gets `status`, and neither the revision nor the password moves."""
    revision = cloud.store.current_revision()
    before = cloud.store.get_password(instance["uuid"])
    reply = await cloud.read(instance, path, **kw)
    assert reply.status == status, (path, kw.get("method"), reply.status, reply.body[:200])
    assert reply.seconds < 5, reply.seconds
    assert cloud.store.current_revision() == revision, path
    assert cloud.store.get_password(instance["uuid"]) == before, path
    return reply


async def test_password_abuse_writes_nothing(cloud: Cloud) -> None:
    vm = await boot(cloud, "p1")

    post = {"method": "POST"}
    await unchanged(cloud, vm, PASSWORD, 400, **post, data=b"p" * 1021)
    await unchanged(cloud, vm, PASSWORD, 400, **post, data=chunks(1021))
    await unchanged(cloud, vm, PASSWORD, 400, **post, data=chunks(8 << 20, 65536))
    await unchanged(cloud, vm, PASSWORD, 400, **post, data=b"\xff\xfe not utf-8")
    await unchanged(cloud, vm, PASSWORD, 400, **post, data=b"nul \x00 inside")
    for method in ("PUT", "DELETE", "PATCH"):
        await unchanged(cloud, vm, PASSWORD, 400, method=method, data=b"secret")
    await unchanged(cloud, vm, "/openstack/2012-08-10/password", 404, **post, data=b"secret")
    await unchanged(cloud, vm, PASSWORD + "/extra", 404, **post, data=b"secret")
    await unchanged(cloud, vm, "/openstack/latest/password.json", 404, **post, data=b"secret")
    # through the EC2 tree: the document comes back, nothing is written
    listing = await unchanged(cloud, vm, "/latest/meta-data/", 200, **post, data=b"secret")
    assert b"hostname" in listing.body
    leaf = await unchanged(cloud, vm, "/latest/meta-data/hostname", 200, **post, data=b"secret")
    assert leaf.body.startswith(b"vm-p1")
    await unchanged(cloud, vm, "/2009-04-04/meta-data/password", 404, **post, data=b"secret")

    first = await cloud.read(vm, PASSWORD, method="POST", data=b"first")
    assert first.status == 200, first.body
    await unchanged(cloud, vm, PASSWORD, 409, **post, data=b"second")
    await unchanged(cloud, vm, PASSWORD, 409, **post, data=b"p" * 5000)  # 409 before the size
    assert (await cloud.read(vm, PASSWORD)).body == b"first"


async def test_racing_posts_write_once(cloud: Cloud) -> None:
    vm = await boot(cloud, "p2")
    replies = await asyncio.gather(
        *(cloud.read(vm, PASSWORD, method="POST", data=f"pw{i}".encode()) for i in range(12))
    )
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] + [409] * 11, statuses
    winner = next(i for i, reply in enumerate(replies) if reply.status == 200)
    assert cloud.store.get_password(vm["uuid"]) == f"pw{winner}"


async def test_largest_password_fits(cloud: Cloud) -> None:
    vm = await boot(cloud, "p3")
    reply = await cloud.read(vm, PASSWORD, method="POST", data=b"p" * 1020)
    assert reply.status == 200, reply.body
    assert (await cloud.read(vm, PASSWORD)).body == b"p" * 1020
