"""Several API nodes behind one agent: requests spread over all of them; a node that stops
(SIGSTOP: no reset, connections hang) is found by probes within a second and fails no
request beyond those in flight; a GET cut off is sent again, a sent POST never; the node
is taken back when it answers again. The same for the control API URLs, whose change-feed
long-poll moves off a stopped node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.agent.agent_fakes import (
    SECRET,
    FakeControl,
    FakeMetadata,
    free_port,
    proxy_headers,
    serving,
    wait_until,
)
from metastack.agent.config import AgentConfig
from metastack.agent.server import RunningAgent, running
from metastack.client.http import ControlClient
from metastack.upstreams import PROBE_INTERVAL, PROBE_TIMEOUT

STUB = Path(__file__).with_name("stub_node.py")
GUESTS = 300


@dataclass
class Node:
    """A stub API node process (metadata + control) and the log of what it received."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    metadata_url: str = ""
    control_url: str = ""

    def records(self, role: str | None = None, method: str | None = None) -> list[dict[str, str]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [
            line
            for line in lines
            if (role is None or line["role"] == role)
            and (method is None or line["method"] == method)
        ]

    def stop(self) -> float:
        """SIGSTOP: the kernel still accepts and acknowledges; nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)
        return time.monotonic()

    def resume(self) -> float:
        os.kill(self.process.pid, signal.SIGCONT)
        return time.monotonic()


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    started: list[Node] = []

    async def start(name: str) -> Node:
        log = tmp_path / f"{name}.log"
        log.touch()
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(STUB), name, "127.0.0.1", str(log), str(GUESTS),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        node = Node(name, process, log)
        started.append(node)
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        _, metadata_port, control_port = line.split()
        node.metadata_url = f"http://127.0.0.1:{metadata_port}"
        node.control_url = f"http://127.0.0.1:{control_port}"
        return node

    yield start
    for node in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.process.pid, signal.SIGCONT)
            node.process.terminate()
        await node.process.wait()


def agent_config(tmp_path: Path, nodes: list[Node], **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "metadata_proxy_socket": str(tmp_path / "agent.sock"),
        "metadata_proxy_shared_secret": SECRET,
        "metadata_endpoints": [node.metadata_url for node in nodes],
        "control_url": [node.control_url for node in nodes],
        "upstream_timeout": 3.0,
        "upstream_connect_timeout": 2.0,
        "feed_wait": 10,
        "prefetch_ports": "off",
    }
    values.update(overrides)
    return AgentConfig.model_validate(values)


@contextlib.asynccontextmanager
async def agent_session(
    config: AgentConfig,
) -> AsyncIterator[tuple[RunningAgent, aiohttp.ClientSession]]:
    async with running(config) as agent:
        await wait_until(lambda: agent.cache.live)
        connector = aiohttp.UnixConnector(path=agent.path)
        async with aiohttp.ClientSession(connector=connector, base_url="http://m") as session:
            yield agent, session


@dataclass
class Outcome:
    seq: int
    began: float
    ended: float
    status: int
    api: str


@dataclass
class Stream:
    """A request every `interval` seconds, each from another guest (a lookup each time
    the guest is new), none waiting for the one before."""

    session: aiohttp.ClientSession
    interval: float = 0.02
    outcomes: list[Outcome] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _one(self, seq: int) -> None:
        ip = f"10.0.{(seq % GUESTS) // 150}.{100 + seq % 150}"
        began = time.monotonic()
        status, api = -1, ""
        try:
            async with self.session.get(
                f"/openstack/latest/meta_data.json?seq={seq}",
                headers=proxy_headers(xff=ip, network="net-a"),
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                status = response.status
                if status == 200:
                    api = (await response.json())["api"]
        except (aiohttp.ClientError, TimeoutError):
            pass
        self.outcomes.append(Outcome(seq, began, time.monotonic(), status, api))

    async def run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self._tasks.append(asyncio.create_task(self._one(seq)))
            seq += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return sorted(self.outcomes, key=lambda outcome: outcome.seq)


async def time_until(condition: Callable[[], bool], since: float, limit: float = 5.0) -> float:
    """Seconds from `since` until the condition holds (polled every 5 ms)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - since


def seqs(node: Node) -> set[int]:
    return {
        int(line["path"].rpartition("seq=")[2])
        for line in node.records("metadata", "GET")
        if "seq=" in line["path"]
    }


async def test_a_stopped_node_fails_no_request_beyond_those_in_flight(
    tmp_path: Path, start_node: Callable[[str], Any]
) -> None:
    a, b = await start_node("a"), await start_node("b")
    async with agent_session(agent_config(tmp_path, [a, b])) as (agent, session):
        stream = Stream(session)
        running_stream = asyncio.create_task(stream.run())
        await asyncio.sleep(1.0)
        before = len(stream.outcomes)
        assert len(seqs(a)) > before / 4 and len(seqs(b)) > before / 4  # spread over both
        # Stop the node holding the change feed's long-poll: both roles fail over at once.
        lookups = {
            node.name: len([r for r in node.records("control") if "/v1/ports" in r["path"]])
            for node in (a, b)
        }
        assert all(lookups.values())  # lookups spread over both control URLs too
        feed = [node for node in (a, b) if "/v1/changes" in node.records("control")[-1]["path"]]
        dead, alive = (a, b) if a in feed else (b, a)
        index = [a, b].index(dead)
        alive_polls = len([r for r in alive.records("control") if "/v1/changes" in r["path"]])
        stopped_at = dead.stop()
        metadata_down = await time_until(
            lambda: not agent.forwarder.upstreams.members[index].up, stopped_at
        )
        control_down = await time_until(
            lambda: not agent.control.upstreams.members[index].up, stopped_at
        )
        feed_moved = await time_until(
            lambda: (
                len([r for r in alive.records("control") if "/v1/changes" in r["path"]])
                > alive_polls
            ),
            stopped_at,
        )
        await asyncio.sleep(1.5)
        resumed_at = dead.resume()
        back = await time_until(lambda: agent.forwarder.upstreams.members[index].up, resumed_at)
        await asyncio.sleep(1.0)
        outcomes = await stream.stop()
        await running_stream
    print(
        f"\n{len(outcomes)} requests; metadata endpoint down after {metadata_down:.3f} s, "
        f"control URL after {control_down:.3f} s, feed re-polled after {feed_moved:.3f} s, "
        f"back {back:.3f} s after SIGCONT; lookups before: {lookups}"
    )
    limit = PROBE_INTERVAL + PROBE_TIMEOUT + 0.2
    assert metadata_down < min(1.0, limit) and control_down < min(1.0, limit)
    assert feed_moved < 2.0  # a long-poll on a dead node is abandoned, not waited out
    assert back < 1.0
    in_flight = [o for o in outcomes if o.began <= stopped_at <= o.ended]
    failed = [o for o in outcomes if o.status != 200]
    print(f"in flight at the stop: {len(in_flight)}, failed: {len(failed)}")
    assert len(failed) <= len(in_flight)
    assert not failed  # every one of them was a GET: sent again to the live node
    # Once the stopped node is known down, the live one answers everything, without delay.
    after = [o for o in outcomes if stopped_at + metadata_down < o.began < resumed_at]
    assert len(after) > 40
    assert {o.api for o in after} == {alive.name}
    assert max(o.ended - o.began for o in after) < 0.5
    # Taken back: requests begun after it answered again reach it.
    later = {o.seq for o in outcomes if o.began > resumed_at + back}
    assert later & seqs(dead)


async def hold_then_stop(
    session: aiohttp.ClientSession, agent: RunningAgent, a: Node, method: str
) -> tuple[list[tuple[int, str, float]], float]:
    """Send two requests at once to /hold/a/...: they go to the two nodes (fewest
    outstanding first); b answers its copy, a holds its own. Then stop a and wait for
    both answers; a is resumed and taken back before returning. Returns the answers
    (status, body, seconds) and when a was stopped."""

    async def call() -> tuple[int, str, float]:
        began = time.monotonic()
        body = b"password" if method == "POST" else None
        path = f"/hold/a/{method.lower()}"
        async with session.request(method, path, headers=proxy_headers(), data=body) as answer:
            text = await answer.text()
            return answer.status, text, time.monotonic() - began

    calls = [asyncio.ensure_future(call()) for _ in range(2)]
    await wait_until(lambda: len(a.records("metadata", method)) == 1)
    await wait_until(lambda: sum(task.done() for task in calls) == 1)
    await asyncio.sleep(0.1)  # a's kernel has acknowledged every byte of its copy
    stopped_at = a.stop()
    results = await asyncio.gather(*calls)
    a.resume()
    await wait_until(lambda: all(member.up for member in agent.forwarder.upstreams.members))
    return results, stopped_at


async def test_a_cut_off_get_is_sent_again_and_a_sent_post_is_not(
    tmp_path: Path, start_node: Callable[[str], Any]
) -> None:
    a, b = await start_node("a"), await start_node("b")
    config = agent_config(tmp_path, [a, b], upstream_timeout=4.0)
    async with agent_session(config) as (agent, session):
        gets, _ = await hold_then_stop(session, agent, a, "GET")
        posts, _ = await hold_then_stop(session, agent, a, "POST")
    print(f"\nGET {gets}\nPOST {posts}")
    assert [status for status, _, _ in gets] == [200, 200]
    assert all('"api": "b"' in body for _, body, _ in gets)
    assert max(took for _, _, took in gets) < 1.5  # cut off once a was found down
    # b answered its own copy and a's, sent again; a saw its copy once
    assert (len(a.records("metadata", "GET")), len(b.records("metadata", "GET"))) == (1, 2)
    assert sorted(status for status, _, _ in posts) == [200, 503]
    failed = next(took for status, _, took in posts if status == 503)
    assert 3.5 < failed < 6.0  # left to its answer until the request's own deadline
    # the held POST reached a once and b never: only b's own copy is there
    assert (len(a.records("metadata", "POST")), len(b.records("metadata", "POST"))) == (1, 1)


def api_requests(api: FakeMetadata) -> list[str]:
    """What reached a fake metadata API, probes (HEAD /) left out."""
    return [seen.path_qs for seen in api.seen if seen.method != "HEAD"]


@contextlib.asynccontextmanager
async def in_process_agent(
    tmp_path: Path, control_url: str, endpoints: list[str], **overrides: Any
) -> AsyncIterator[tuple[RunningAgent, aiohttp.ClientSession]]:
    values: dict[str, Any] = {
        "metadata_proxy_socket": str(tmp_path / "run" / "agent.sock"),
        "metadata_proxy_shared_secret": SECRET,
        "metadata_endpoints": endpoints,
        "control_url": control_url,
        "upstream_timeout": 3.0,
        "upstream_connect_timeout": 0.5,
        "feed_wait": 2,
        "prefetch_ports": "off",
        **overrides,
    }
    async with agent_session(AgentConfig.model_validate(values)) as started:
        yield started


async def get(session: aiohttp.ClientSession, path: str = "/latest/meta-data/") -> str:
    async with session.get(path, headers=proxy_headers()) as response:
        assert response.status == 200
        return str((await response.json())["api"])


async def test_requests_are_spread_over_every_endpoint(
    tmp_path: Path, control: FakeControl
) -> None:
    apis = [FakeMetadata(SECRET, name=name) for name in ("one", "two", "three")]
    async with contextlib.AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(serving(api.app())) for api in apis]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with in_process_agent(tmp_path, control.url, urls) as (_, session):
            one_at_a_time = [await get(session) for _ in range(30)]
            together = await asyncio.gather(*(get(session) for _ in range(60)))
    assert sorted(one_at_a_time.count(name) for name in ("one", "two", "three")) == [10, 10, 10]
    assert all(together.count(name) >= 10 for name in ("one", "two", "three"))
    assert sorted(len(api_requests(api)) for api in apis) == sorted(
        one_at_a_time.count(api.name) + together.count(api.name) for api in apis
    )


async def test_a_slow_endpoint_gets_fewer_requests(tmp_path: Path, control: FakeControl) -> None:
    slow, quick = FakeMetadata(SECRET, name="slow"), FakeMetadata(SECRET, name="quick")
    slow.delay = 0.3
    async with serving(slow.app()) as slow_port, serving(quick.app()) as quick_port:
        urls = [f"http://127.0.0.1:{slow_port}", f"http://127.0.0.1:{quick_port}"]
        async with in_process_agent(tmp_path, control.url, urls) as (_, session):
            calls = []
            for _ in range(40):  # one every 20 ms, none waiting for the one before
                calls.append(asyncio.ensure_future(get(session)))
                await asyncio.sleep(0.02)
            answers = await asyncio.gather(*calls)
    print(f"\nslow {answers.count('slow')}, quick {answers.count('quick')}")
    assert answers.count("quick") > 3 * answers.count("slow") > 0


async def test_a_refused_endpoint_is_skipped_and_taken_back(
    tmp_path: Path, control: FakeControl
) -> None:
    one, two = FakeMetadata(SECRET, name="one"), FakeMetadata(SECRET, name="two")
    port_one = free_port()
    async with serving(two.app()) as port_two:
        urls = [f"http://127.0.0.1:{port_one}", f"http://127.0.0.1:{port_two}"]
        async with in_process_agent(tmp_path, control.url, urls) as (agent, session):
            assert [await get(session) for _ in range(6)] == ["two"] * 6
            first = agent.forwarder.upstreams.members[0]
            await wait_until(lambda: not first.up, timeout=1.0)
            async with serving(one.app(), port_one):
                began = time.monotonic()
                await wait_until(lambda: first.up, timeout=1.0)
                print(f"\ntaken back after {time.monotonic() - began:.3f} s")
                assert {await get(session) for _ in range(4)} == {"one", "two"}
            # gone again, its pooled connections with it: the same requests go to two
            assert [await get(session) for _ in range(4)] == ["two"] * 4
    assert len(api_requests(two)) == 6 + 2 + 4


async def test_the_netagents_client_moves_off_a_stopped_control_node(
    start_node: Callable[[str], Any],
) -> None:
    a, b = await start_node("a"), await start_node("b")
    client = ControlClient([a.control_url, b.control_url], "token", timeout=30)
    try:
        assert len(await client.list("ports", network_id="net-a")) == GUESTS + 1
        current = (await client.changes(0, 0))["revision"]
        # A long-poll that nothing will answer for 20 s, on whichever node it lands on.
        poll = asyncio.ensure_future(client.changes(current, 20))
        await wait_until(
            lambda: any("wait=20" in r["path"] for n in (a, b) for r in n.records("control"))
        )
        held = a if any("wait=20" in r["path"] for r in a.records("control")) else b
        other = b if held is a else a
        stopped_at = held.stop()
        # The poll moves to the other node (where it waits again) within a second or two.
        moved = await time_until(
            lambda: any("wait=20" in r["path"] for r in other.records("control")), stopped_at
        )
        print(f"\nlong-poll moved to {other.name} after {moved:.3f} s")
        assert moved < 2.0
        assert not poll.done()
        for _ in range(5):  # calls keep working, on the live node
            assert len(await client.list("ports", network_id="net-a")) == GUESTS + 1
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        held.resume()
    finally:
        await client.close()
