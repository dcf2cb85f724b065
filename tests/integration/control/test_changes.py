"""The change feed over HTTP: order, filters by revision, long-poll wake-ups, other writers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from metastack.agent.control import ControlClient as AgentControl
from metastack.api.control import make_control_app
from metastack.client.http import ControlClient, FeedOf
from metastack.config import ApiConfig
from metastack.errors import ChangesPruned
from metastack.http11 import Pool
from metastack.store.specs import ProjectCreate
from metastack.store.sql import SqlStore
from metastack.upstreams import http_upstreams

from .conftest import Api

CHANGE_FIELDS = {
    "revision", "resource", "resource_id", "action", "project_id", "network_id", "instance_id",
}  # fmt: skip


async def test_feed_lists_changes_in_order(api: Api) -> None:
    assert await api.ok("GET", "/v1/changes") == {"revision": 0, "changes": []}
    network = await api.ok("POST", "/v1/networks", 201, json={"project_id": "p"})
    await api.ok(
        "POST", "/v1/subnets", 201, json={"network_id": network["id"], "cidr": "10.0.0.0/24"}
    )
    await api.ok("PATCH", f"/v1/networks/{network['id']}", json={"mtu": 1400})
    feed = await api.ok("GET", "/v1/changes?since=0")
    assert feed["revision"] == 3
    assert [c["revision"] for c in feed["changes"]] == [1, 2, 3]
    assert all(set(c) == CHANGE_FIELDS for c in feed["changes"])
    assert [(c["resource"], c["action"]) for c in feed["changes"]] == [
        ("network", "create"), ("subnet", "create"), ("network", "update"),
    ]  # fmt: skip
    assert feed["changes"][1]["network_id"] == network["id"]
    page = await api.ok("GET", "/v1/changes?since=1&limit=1")
    assert (page["revision"], [c["revision"] for c in page["changes"]]) == (3, [2])
    assert (await api.ok("GET", "/v1/changes?since=3"))["changes"] == []
    behind = await api.ok("GET", "/v1/changes?since=99&wait=30")  # answers at once
    assert behind == {"revision": 3, "changes": []}


async def test_long_poll_times_out_empty(api: Api) -> None:
    started = time.monotonic()
    assert await api.ok("GET", "/v1/changes?since=0&wait=0.3") == {"revision": 0, "changes": []}
    assert 0.25 < time.monotonic() - started < 5


async def test_long_poll_wakes_on_a_write_through_the_api(api: Api) -> None:
    waiters = [asyncio.create_task(api.ok("GET", "/v1/changes?since=0&wait=20")) for _ in range(20)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiters)
    started = time.monotonic()
    await api.ok("POST", "/v1/projects", 201, json={"name": "x"})
    answers = await asyncio.gather(*waiters)
    assert time.monotonic() - started < 2
    assert all(a["revision"] == 1 and len(a["changes"]) == 1 for a in answers)


async def test_long_poll_wakes_on_another_writer(api: Api, database_url: str) -> None:
    waiter = asyncio.create_task(api.ok("GET", "/v1/changes?since=0&wait=20"))
    await asyncio.sleep(0.2)
    other = SqlStore(database_url)  # another process or node, as far as the API can tell
    try:
        await asyncio.to_thread(other.create_project, ProjectCreate(name="elsewhere"))
    finally:
        other.close()
    answer = await asyncio.wait_for(waiter, 5)
    assert [c["resource"] for c in answer["changes"]] == ["project"]


async def test_bad_feed_parameters(api: Api) -> None:
    for query in ("since=-1", "since=x", "wait=61", "wait=abc", "limit=0", "sinse=1"):
        answer = await api.call("GET", "/v1/changes?" + query)
        assert answer.status == 400, query
        assert query.split("=")[0] in answer.body["error"]


async def test_stopping_the_server_answers_long_polls_at_once(sql_store: SqlStore) -> None:
    config = ApiConfig.model_validate({"database_url": "sqlite://"})
    runner = web.AppRunner(make_control_app(config, sql_store), shutdown_timeout=30)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/changes?since=0&wait=30"
    async with aiohttp.ClientSession() as http:

        async def poll() -> Any:
            async with http.get(url) as response:
                return response.status, await response.json()

        waiter = asyncio.create_task(poll())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await runner.cleanup()
        status, body = await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 2
    assert (status, body["changes"]) == (200, [])


async def test_a_pruned_revision_is_410_naming_the_oldest_kept(api: Api) -> None:
    for name in ("a", "b", "c"):
        await api.ok("POST", "/v1/projects", 201, json={"name": name})
    assert await asyncio.to_thread(api.store.prune_changes, 0) == 3  # all older than now
    await api.ok("POST", "/v1/projects", 201, json={"name": "d"})
    for since in (0, 2):
        gone = await api.call("GET", f"/v1/changes?since={since}&wait=5")
        assert gone.status == 410, gone.body
        assert (gone.body["oldest_revision"], gone.body["revision"]) == (4, 4)
        assert "no longer kept" in gone.body["error"]
    page = await api.ok("GET", "/v1/changes?since=3")  # at 3, nothing was missed
    assert [c["revision"] for c in page["changes"]] == [4]


async def test_both_feed_clients_read_the_410_as_a_resync(api: Api) -> None:
    for name in ("a", "b"):
        await api.ok("POST", "/v1/projects", 201, json={"name": name})
    await asyncio.to_thread(api.store.prune_changes, 0)
    pools = http_upstreams(
        [api.base],
        lambda endpoint: Pool(endpoint, connect_timeout=2, pool_size=1),
        what="control API",
    )
    agent_side = AgentControl(pools, None)
    netagent_side = ControlClient(api.base)
    try:
        for client in (agent_side, FeedOf(netagent_side)):
            with pytest.raises(ChangesPruned) as gone:
                await client.changes(1, 0, 5)
            assert (gone.value.oldest_revision, gone.value.revision) == (3, 2)
            assert (await client.changes(2, 0, 5)).revision == 2  # up to date: no 410
        await agent_side.ping(5)  # the agent's liveness read still answers (since=0)
    finally:
        await agent_side.close()
        await netagent_side.close()
