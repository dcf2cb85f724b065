"""The lookup cache through the real agent: hits, feed invalidation, the race, a dark feed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from integration.agent.agent_fakes import FakeControl, proxy_headers, wait_until
from metastack.agent.config import AgentConfig
from metastack.agent.server import RunningAgent, running


async def instance_of(client: aiohttp.ClientSession, **headers: str | None) -> str | int:
    """The instance the API was asked about, or the status when the agent did not forward."""
    async with client.get("/latest/meta-data/", headers=proxy_headers(**headers)) as response:
        if response.status != 200:
            return response.status
        instance: str = (await response.json())["instance"]
        return instance


def port_lookups(control: FakeControl) -> int:
    return sum(url.startswith("/v1/ports") for url in control.lookups)


async def test_many_requests_one_lookup(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    for _ in range(50):
        assert await instance_of(client) == "inst-a"
    for _ in range(20):
        assert (
            await instance_of(client, xff="10.0.1.7", network=None, router="router-1") == "inst-c"
        )
    assert port_lookups(control) == 2
    assert sum(url.startswith("/v1/routers") for url in control.lookups) == 1


async def test_moved_port_serves_the_new_instance_at_once(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    assert await instance_of(client) == "inst-a"
    await control.move_port("p1", "inst-new", "proj-new")
    await control.applied()
    assert await instance_of(client) == "inst-new"
    await control.delete_port("p1")
    await control.applied()
    assert await instance_of(client) == 404


async def test_router_lookups_follow_port_moves(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    router = {"xff": "10.0.1.7", "network": None, "router": "router-1"}
    assert await instance_of(client, **router) == "inst-c"
    await control.move_port("p3", "inst-new", "proj-new")
    await control.applied()
    assert await instance_of(client, **router) == "inst-new"


async def test_router_interface_change_drops_its_networks(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    guest_on_b = {"network": None, "router": "router-1"}  # 10.0.0.5 is on net-a and net-b
    assert await instance_of(client, **guest_on_b) == "inst-a"
    control.add_router("router-1", ["net-b"])
    await control.record("router", "router-1", "update")
    await control.applied()
    assert await instance_of(client, **guest_on_b) == "inst-b"


async def test_lookup_in_flight_during_a_change_is_not_cached(
    client: aiohttp.ClientSession, control: FakeControl, agent: RunningAgent
) -> None:
    control.lookup_gate = asyncio.Event()
    first = asyncio.create_task(instance_of(client))
    await control.lookup_arrived.wait()  # the answer (old owner) is made, not yet sent
    await control.move_port("p1", "inst-new", "proj-new")
    await control.applied()
    control.lookup_gate.set()
    assert await first == "inst-a"  # concurrent with the change: either side is correct
    assert agent.cache.stats["refused"] == 1
    assert await instance_of(client) == "inst-new"
    assert port_lookups(control) == 2


async def test_dark_feed_bypasses_the_cache_until_it_is_back(
    client: aiohttp.ClientSession, control: FakeControl, agent: RunningAgent
) -> None:
    assert await instance_of(client) == "inst-a"
    control.feed_down = True
    await control.record("project", "unrelated", "update")  # ends the long-poll in flight
    await wait_until(lambda: not agent.cache.live)
    before = port_lookups(control)
    for _ in range(3):
        assert await instance_of(client) == "inst-a"
    assert port_lookups(control) == before + 3  # every request asked the control API
    control.feed_down = False
    await wait_until(lambda: agent.cache.live)
    for _ in range(3):
        assert await instance_of(client) == "inst-a"
    assert port_lookups(control) == before + 4


async def test_control_api_restart_resyncs(
    client: aiohttp.ClientSession, control: FakeControl, agent: RunningAgent
) -> None:
    assert await instance_of(client) == "inst-a"
    for _ in range(3):
        await control.record("project", "unrelated", "update")
    await control.applied()
    resyncs = agent.cache.stats["resyncs"]
    # A fresh counter that restarts below the agent's revision: changes were lost.
    control.ports["p1"]["device_id"] = "inst-after-restart"
    async with control._changed:
        control.revision, control.changes = 0, []
    await control.record("network", "net-z", "create")
    await wait_until(lambda: agent.cache.stats["resyncs"] > resyncs)
    assert await instance_of(client) == "inst-after-restart"


async def test_behind_a_pruned_feed_the_agent_resyncs_and_follows_again(
    client: aiohttp.ClientSession, control: FakeControl, agent: RunningAgent
) -> None:
    assert await instance_of(client) == "inst-a"
    resyncs = agent.cache.stats["resyncs"]
    # The port moves and the change is pruned before the agent reads it: its long poll
    # wakes to a 410, never to a page without the move.
    async with control._changed:
        control.ports["p1"]["device_id"] = "inst-new"
        for resource in ("port", "network"):
            control.revision += 1
            change = {"revision": control.revision, "resource": resource, "resource_id": "x"}
            control.changes.append({**change, "action": "update", "network_id": "net-a"})
        control.prune(control.revision - 1)
        control._changed.notify_all()
    await wait_until(lambda: agent.cache.stats["resyncs"] > resyncs and agent.cache.live)
    await control.applied()  # following again from the current revision
    before = port_lookups(control)
    for _ in range(3):
        assert await instance_of(client) == "inst-new"
    assert port_lookups(control) == before + 1  # looked up again once, then cached


async def test_back_from_an_outage_longer_than_the_retention(
    client: aiohttp.ClientSession, control: FakeControl, agent: RunningAgent
) -> None:
    assert await instance_of(client) == "inst-a"
    control.feed_down = True
    await control.record("project", "unrelated", "update")  # ends the long-poll in flight
    await wait_until(lambda: not agent.cache.live)
    await control.move_port("p1", "inst-new", "proj-new")
    control.prune(control.revision)  # everything the agent saw or missed is gone
    control.feed_down = False
    await wait_until(lambda: agent.cache.live)
    before = port_lookups(control)
    for _ in range(3):
        assert await instance_of(client) == "inst-new"
    assert port_lookups(control) == before + 1


async def test_prefetched_network_answers_new_guests_without_a_lookup(
    make_config: Callable[..., AgentConfig], control: FakeControl
) -> None:
    async with running(make_config(prefetch_ports="all")) as agent:
        await wait_until(lambda: agent.cache.live)
        for n in range(20, 40):  # instances created just before their guests boot
            control.add_port(f"new-{n}", "net-a", f"10.0.0.{n}", f"inst-{n}", project_id="proj-a")
            await control.record("port", f"new-{n}", "create", network_id="net-a")
        await control.applied()
        whole = "/v1/ports?network_id=net-a"
        await wait_until(lambda: whole in control.lookups)
        await wait_until(
            lambda: agent.cache.stats["refused"] == 0 and len(agent.cache.ports.entries) >= 20
        )
        before = port_lookups(control)
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=agent.path), base_url="http://metadata"
        ) as client:
            for n in range(20, 40):
                assert await instance_of(client, xff=f"10.0.0.{n}") == f"inst-{n}"
        assert port_lookups(control) == before  # every guest found in the cache
