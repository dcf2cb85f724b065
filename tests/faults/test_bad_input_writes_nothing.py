"""Rejected control-API input changes nothing, on SQLite and PostgreSQL (beyond test_bad_input)."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from metastack.store.sql import SqlStore

from .conftest import Cloud, api_config, boot, running

COLLECTIONS = ("projects", "networks", "subnets", "routers", "ports", "instances")


@pytest.fixture
async def cloud(sql_store: SqlStore, database_url: str) -> AsyncIterator[Cloud]:
    async with running(api_config(database_url), sql_store) as cloud:
        yield cloud


async def snapshot(cloud: Cloud) -> tuple[int, dict[str, Any]]:
    """The revision and every object the control API lists."""
    lists = {name: (await cloud.ok("GET", f"/v1/{name}"))[name] for name in COLLECTIONS}
    return cloud.store.current_revision(), lists


async def refused(cloud: Cloud, status: int, method: str, path: str, **kwargs: Any) -> str:
    """Send a bad request: it gets `status` with an error message and changes nothing."""
    before = await snapshot(cloud)
    reply = await cloud._call(method, cloud.control + path, **kwargs)
    assert reply.status == status, (method, path, reply.status, reply.body)
    message = reply.json()["error"]
    assert isinstance(message, str) and message
    assert await snapshot(cloud) == before, (method, path)
    return str(message)


async def test_bad_writes_change_nothing(cloud: Cloud) -> None:
    instance = await boot(cloud, "p1")
    uuid = instance["uuid"]
    port = await cloud.ok("GET", f"/v1/ports/{instance['ports'][0]}")
    network_id = port["network_id"]
    other = await cloud.ok("POST", "/v1/ports", {"network_id": network_id})
    taken_ip = port["fixed_ips"][0]["ip_address"]
    subnet_id = port["fixed_ips"][0]["subnet_id"]
    router = await cloud.ok("POST", "/v1/routers", {"project_id": "p1"})
    await cloud.ok("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet_id})
    big = base64.b64encode(b"x" * 49200).decode()

    cases: list[tuple[int, str, str, dict[str, Any]]] = [
        # malformed bodies
        (400, "POST", "/v1/networks", {"data": b"\xff\xfe{}"}),
        (400, "POST", "/v1/networks", {"data": b"[" * 100_000}),
        (
            400,
            "POST",
            "/v1/networks",
            {"data": b'{"project_id": "p", "mtu": 1' + b"0" * 5000 + b"}"},
        ),
        (400, "PATCH", f"/v1/instances/{uuid}", {"data": b'{"name": '}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"data": b"null"}),
        # NUL characters, which PostgreSQL cannot store
        (400, "POST", "/v1/networks", {"json": {"project_id": "p", "name": "a\u0000b"}}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"metadata": {"k\u0000": "v"}}}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"public_key": "ssh-rsa \u0000"}}),
        (400, "POST", "/v1/projects", {"json": {"name": "\u0000"}}),
        # wrong types, unknown fields, oversize user data on update
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"colour": "red"}}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"user_data": big}}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"launch_index": True}}),
        (400, "PATCH", f"/v1/instances/{uuid}", {"json": {"security_groups": "default"}}),
        (400, "PATCH", f"/v1/ports/{other['id']}", {"json": {"fixed_ips": [{"ip_address": 5}]}}),
        (400, "PATCH", f"/v1/networks/{network_id}", {"json": {"mtu": None}}),
        (413, "PATCH", f"/v1/instances/{uuid}", {"data": io.BytesIO(b" " * (2 << 20))}),
        # duplicates
        (
            409,
            "POST",
            "/v1/instances",
            {"json": {"uuid": uuid, "name": "again", "project_id": "p1"}},
        ),
        (409, "POST", "/v1/networks", {"json": {"id": network_id, "project_id": "p1"}}),
        (409, "POST", "/v1/ports", {"json": {"id": other["id"], "network_id": network_id}}),
        (
            409,
            "PATCH",
            f"/v1/ports/{other['id']}",
            {"json": {"fixed_ips": [{"ip_address": taken_ip}]}},
        ),
        (409, "PATCH", f"/v1/ports/{other['id']}", {"json": {"mac_address": port["mac_address"]}}),
        (409, "POST", f"/v1/routers/{router['id']}/interfaces", {"json": {"subnet_id": subnet_id}}),
        (
            409,
            "POST",
            "/v1/instances",
            {
                "json": {
                    "name": "vm2",
                    "project_id": "p1",
                    "networks": [{"network_id": network_id, "ip_address": taken_ip}],
                }
            },
        ),
        # still in use
        (409, "DELETE", f"/v1/networks/{network_id}", {}),
        (409, "DELETE", f"/v1/subnets/{subnet_id}", {}),
        (409, "DELETE", f"/v1/ports/{router['id']}", {})
        if False
        else (404, "DELETE", f"/v1/ports/{router['id']}", {}),
    ]
    for status, method, path, kwargs in cases:
        await refused(cloud, status, method, path, **kwargs)
