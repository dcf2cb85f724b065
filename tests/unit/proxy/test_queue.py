"""The proxy's queue to the agent: first come, first served, whatever the query string says."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from metastack.http11 import Limits
from metastack.proxy.config import ListenerConfig
from metastack.proxy.forward import Forwarder
from metastack.proxy.listeners import Listeners
from metastack.proxy.upstream import AgentClient

UPSTREAM_TIMEOUT = 1.0


async def get(port: int, target: str) -> tuple[int, bytes, float]:
    """(status, body, monotonic time the answer arrived) of one request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if x)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), body, time.monotonic()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def one_turn(agent: str, free_port: int) -> AsyncIterator[tuple[AgentClient, int]]:
    """A listener whose forwarder sends one request at a time to the (fake) agent."""
    client = AgentClient(agent, connect_timeout=1.0, pool_size=4, concurrency=1)
    held = Listeners(Forwarder(client, upstream_timeout=UPSTREAM_TIMEOUT), Limits(), backlog=16)
    await held.add(ListenerConfig(host="127.0.0.1", port=free_port, network_id="net-1"))
    yield client, free_port
    await held.close(0.1)
    await client.close()


async def until_queued(client: AgentClient, in_flight: tuple[int, int]) -> None:
    for _ in range(200):
        if client.in_flight() == in_flight:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"in flight {client.in_flight()}, expected {in_flight}")


@pytest.mark.parametrize("query", ["wait_for_change=true", "WAIT_FOR_CHANGE=TRUE&last_etag=x"])
async def test_wait_for_change_waits_its_turn(
    one_turn: tuple[AgentClient, int], query: str
) -> None:
    client, port = one_turn
    # Two ordinary requests the (fake) agent answers in 0.3 s each, then a long poll.
    first = asyncio.ensure_future(get(port, "/slow?s=0.3&n=1"))
    await until_queued(client, (1, 0))
    second = asyncio.ensure_future(get(port, "/slow?s=0.3&n=2"))
    await until_queued(client, (1, 1))
    started = time.monotonic()
    poll = asyncio.ensure_future(get(port, f"/now?{query}"))
    await until_queued(client, (1, 2))  # in the queue behind the second, not beside it
    answers = await asyncio.gather(first, second, poll)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [json.loads(body)["query"] for _, body, _ in answers] == [
        "s=0.3&n=1",
        "s=0.3&n=2",
        query,
    ]
    done = [at for _, _, at in answers]
    assert done[0] < done[1] < done[2]  # answered after the earlier ones, in arrival order
    assert done[2] - started > 0.4  # it waited for both (0.6 s of work, 0.1 s gone before)


async def test_wait_for_change_times_out_at_upstream_timeout(
    one_turn: tuple[AgentClient, int],
) -> None:
    _, port = one_turn
    started = time.monotonic()
    status, body, done = await get(port, "/slow?s=5&wait_for_change=true")
    assert status == 504, body
    assert UPSTREAM_TIMEOUT - 0.1 < done - started < UPSTREAM_TIMEOUT + 0.5


async def test_a_long_wait_does_not_hold_the_turn_past_half_a_second(
    one_turn: tuple[AgentClient, int],
) -> None:
    # The same for every request: the turn is given up after 0.5 s, the timeout still runs.
    client, port = one_turn
    slow = asyncio.ensure_future(get(port, "/slow?s=5&wait_for_change=true"))
    await until_queued(client, (1, 0))
    started = time.monotonic()
    status, _, done = await get(port, "/now")
    assert status == 200
    assert 0.3 < done - started < 0.9
    assert (await slow)[0] == 504
