"""Agents through the control API: state reports, listing, scheduling as objects are created,
HA routers, the periodic pass that moves networks off dead agents, and the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from metastack.api.control import make_control_app
from metastack.api.control.agents import scheduling_policy
from metastack.config import ApiConfig
from metastack.store.sql import SqlStore

from .conftest import Api
from .test_cli import ok, ok_json

AgentsApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def agents_api(database_url: str) -> AsyncIterator[AgentsApi]:
    """A control API whose store schedules by the given [api] fields."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(**fields: Any) -> Api:
        config = ApiConfig.model_validate({"database_url": database_url, **fields})
        store = SqlStore(database_url, scheduling=scheduling_policy(config))
        runner = web.AppRunner(make_control_app(config, store, poll_interval=0.02))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        session = aiohttp.ClientSession()

        async def cleanup() -> None:
            await session.close()
            await runner.cleanup()
            store.close()

        cleanups.append(cleanup)
        return Api(f"http://127.0.0.1:{runner.addresses[0][1]}", session, store, {})

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def test_report_list_show_delete(agents_api: AgentsApi) -> None:
    api = await agents_api()
    body = {"host": "net-1", "capabilities": ["dhcp", "l3"]}
    agent = await api.ok("POST", "/v1/agents", json=body)
    assert (agent["host"], agent["capabilities"], agent["alive"]) == ("net-1", ["dhcp", "l3"], True)
    assert agent["networks"] == agent["routers"] == [] and agent["heartbeat_at"]
    again = await api.ok("POST", "/v1/agents", json={"host": "net-1"})
    assert again["id"] == agent["id"] and again["capabilities"] == ["dhcp", "l3", "metadata"]
    assert again["heartbeat_at"] > agent["heartbeat_at"]
    await api.ok("POST", "/v1/agents", json={"host": "net-2"})
    listed = await api.ok("GET", "/v1/agents")
    assert [a["host"] for a in listed["agents"]] == ["net-1", "net-2"]
    only = await api.ok("GET", "/v1/agents?host=net-2")
    assert [a["host"] for a in only["agents"]] == ["net-2"]
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["host"] == "net-1"
    await api.ok("DELETE", f"/v1/agents/{agent['id']}", 204)
    missing = await api.call("GET", f"/v1/agents/{agent['id']}")
    assert missing.status == 404 and agent["id"] in missing.body["error"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "host: field required"),
        ({"host": ""}, "host"),
        ({"host": "h", "capabilities": ["firewall"]}, "capabilities"),
        ({"host": "h", "capabilities": ["dhcp", "dhcp"]}, "capabilities"),
        ({"host": "h", "alive": True}, "alive: unknown field"),
    ],
)
async def test_bad_reports_are_refused(
    agents_api: AgentsApi, body: dict[str, Any], needle: str
) -> None:
    api = await agents_api()
    answer = await api.call("POST", "/v1/agents", json=body)
    assert answer.status == 400 and needle in answer.body["error"], answer.body
    assert (await api.ok("GET", "/v1/agents"))["agents"] == []


async def test_created_objects_are_scheduled_and_shown(agents_api: AgentsApi) -> None:
    api = await agents_api(dhcp_agents_per_network=2, max_l3_agents_per_router=2)
    ids = {}
    for host in ("a", "b", "c"):
        ids[host] = (await api.ok("POST", "/v1/agents", json={"host": host}))["id"]
    network = await api.ok("POST", "/v1/networks", 201, json={"project_id": "p"})
    assert len(set(network["dhcp_agents"])) == 2
    router = await api.ok("POST", "/v1/routers", 201, json={"project_id": "p"})
    assert (router["ha"], router["vrid"], len(set(router["l3_agents"]))) == (True, 1, 2)
    assert (await api.ok("GET", f"/v1/routers/{router['id']}"))["l3_agents"] == router["l3_agents"]
    agents = {a["id"]: a for a in (await api.ok("GET", "/v1/agents"))["agents"]}
    for agent_id in network["dhcp_agents"]:
        assert agents[agent_id]["networks"] == [network["id"]]
    for agent_id in router["l3_agents"]:
        assert agents[agent_id]["routers"] == [router["id"]]


async def test_dead_agent_is_replaced_by_the_periodic_pass(agents_api: AgentsApi) -> None:
    api = await agents_api(agent_down_time=1.0)
    dying = (await api.ok("POST", "/v1/agents", json={"host": "dying"}))["id"]
    network = await api.ok("POST", "/v1/networks", 201, json={"project_id": "p"})
    router = await api.ok("POST", "/v1/routers", 201, json={"project_id": "p"})
    assert network["dhcp_agents"] == router["l3_agents"] == [dying]
    since = (await api.ok("GET", "/v1/changes?since=0"))["revision"]
    deadline = time.monotonic() + 10
    survivor = ""
    while time.monotonic() < deadline:  # only the survivor keeps reporting
        survivor = (await api.ok("POST", "/v1/agents", json={"host": "survivor"}))["id"]
        shown = await api.ok("GET", f"/v1/networks/{network['id']}")
        if shown["dhcp_agents"] == [survivor]:
            break
        await asyncio.sleep(0.2)
    assert (await api.ok("GET", f"/v1/networks/{network['id']}"))["dhcp_agents"] == [survivor]
    assert (await api.ok("GET", f"/v1/routers/{router['id']}"))["l3_agents"] == [survivor]
    agents = {a["host"]: a for a in (await api.ok("GET", "/v1/agents"))["agents"]}
    assert agents["dying"]["alive"] is False and agents["dying"]["networks"] == []
    changes = (await api.ok("GET", f"/v1/changes?since={since}"))["changes"]
    moved = {(c["resource"], c["resource_id"], c["action"]) for c in changes}
    assert {("network", network["id"], "update"), ("router", router["id"], "update")} <= moved


async def test_cli_network_agent_list(agents_api: AgentsApi) -> None:
    api = await agents_api()
    await api.ok("POST", "/v1/agents", json={"host": "node-a"})
    await api.ok("POST", "/v1/agents", json={"host": "node-b", "capabilities": ["l3"]})
    network = await api.ok("POST", "/v1/networks", 201, json={"project_id": "p"})
    table = await ok(api, "network", "agent", "list")
    assert "node-a" in table and "node-b" in table and ":-)" in table
    assert "dhcp, l3, metadata" in table
    listed = await ok_json(api, "network", "agent", "list")
    assert {a["host"]: a["networks"] for a in listed} == {"node-a": [network["id"]], "node-b": []}
    assert all(a["alive"] is True and a["heartbeat_at"] for a in listed)
    assert [
        a["host"] for a in await ok_json(api, "network", "agent", "list", "--host", "node-b")
    ] == ["node-b"]
    shown = await ok_json(api, "network", "agent", "show", "node-a")
    assert shown["networks"] == [network["id"]]
    await ok(api, "network", "agent", "delete", "node-a")
    assert [a["host"] for a in await ok_json(api, "network", "agent", "list")] == ["node-b"]
