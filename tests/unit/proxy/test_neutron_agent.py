"""Our proxy in front of neutron's own metadata agent (tests/support/neutron_agent.py):
its bare-LF 404 and its 200s reach the guest whole, every request reaches the agent in one
read, and a burst against its backlog of 5 costs the guests nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from metastack.proxy.config import ListenerConfig, ProxyConfig
from metastack.proxy.forward import Forwarder
from metastack.proxy.listeners import Listeners
from metastack.proxy.serve import limits_from
from metastack.proxy.upstream import AgentClient
from support.neutron_agent import INSTANCE_ID_PATH, NeutronAgent, not_found, relayed_answer
from support.ports import free_ports

NETWORK, ROUTER, UNKNOWN = "net-1", "rtr-1", "net-none"
INSTANCE = "8a3f06f0-6c3c-4a6e-9d1e-0f6b3c1d2e4f"
HOST = b"Host: 169.254.169.254\r\n"


@pytest.fixture
def neutron(tmp_path: Path) -> Iterator[NeutronAgent]:
    ports = {(NETWORK, "127.0.0.1"): INSTANCE, (ROUTER, "127.0.0.1"): INSTANCE}
    with NeutronAgent(str(tmp_path / "metadata_proxy"), ports, delay=0.002).running() as agent:
        yield agent


@pytest.fixture
async def proxy(neutron: NeutronAgent) -> AsyncIterator[dict[str, int]]:
    """The proxy as `metastack proxy` builds it with its default settings; a listener per
    identity on 127.0.0.1 (ports by name)."""
    config = ProxyConfig(metadata_proxy_socket=neutron.path, control_socket="")
    client = AgentClient(
        neutron.path,
        connect_timeout=config.connect_timeout,
        pool_size=config.upstream_pool_size,
        concurrency=config.upstream_concurrency,
    )
    forwarder = Forwarder(client, upstream_timeout=config.upstream_timeout)
    listeners = Listeners(forwarder, limits_from(config), config.backlog)
    ports = dict(zip((NETWORK, ROUTER, UNKNOWN), free_ports(3), strict=True))
    try:
        await listeners.add(
            ListenerConfig(host="127.0.0.1", port=ports[NETWORK], network_id=NETWORK)
        )
        await listeners.add(ListenerConfig(host="127.0.0.1", port=ports[ROUTER], router_id=ROUTER))
        await listeners.add(
            ListenerConfig(host="127.0.0.1", port=ports[UNKNOWN], network_id=UNKNOWN)
        )
        yield ports
    finally:
        await listeners.close(0.1)
        await client.close()


async def guest(port: int, raw: bytes) -> bytes:
    """Send `raw` on a new connection and read until the proxy closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def get(path: str, *extra: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"".join(extra) + b"\r\n"


CLOSE = b"Connection: close\r\n"


async def test_the_agents_404_reaches_the_guest_with_its_body(proxy: dict[str, int]) -> None:
    for ident, scope in ((UNKNOWN, "network"),):
        raw = await guest(proxy[ident], get("/latest/meta-data/", CLOSE))
        expected = not_found(scope, ident)
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 404 Not Found"
        assert b"Content-Type: text/plain; charset=UTF-8" in lines
        assert f"Content-Length: {len(body)}".encode() in lines
        assert body == expected.partition(b"\n\n")[2]
        assert b"Instance was not found on network net-none.<br /><br />" in body


async def test_a_200_passes_byte_for_byte(proxy: dict[str, int]) -> None:
    for port in (proxy[NETWORK], proxy[ROUTER]):
        # Keep-alive, as cloud-init asks: the proxy adds nothing to the agent's answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path, answer in (
            (INSTANCE_ID_PATH, relayed_answer("HTTP/1.1", "text/plain; charset=UTF-8",
                                              INSTANCE.encode())),
            ("/openstack/latest/meta_data.json", relayed_answer("HTTP/1.1", "application/json",
                json.dumps({"uuid": INSTANCE, "path": "/openstack/latest/meta_data.json"})
                .encode())),
            ("/latest/empty", relayed_answer("HTTP/1.1", "text/plain; charset=UTF-8", b"")),
        ):  # fmt: skip
            writer.write(get(path))
            got = await asyncio.wait_for(reader.readexactly(len(answer)), 5)
            assert got == answer
        writer.close()


async def test_every_request_reaches_the_agent_in_one_read(
    proxy: dict[str, int], neutron: NeutronAgent
) -> None:
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"p" * 60) for n in range(30))  # ~2.3 KB
    body = b'{"password": "' + b"s" * 300 + b'"}'
    post = (
        b"POST /openstack/latest/password HTTP/1.1\r\n" + HOST + CLOSE + padding
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    raws = await asyncio.gather(
        *(guest(proxy[NETWORK], r) for r in [get(INSTANCE_ID_PATH, padding, CLOSE), post] * 10)
    )
    assert all(raw.startswith(b"HTTP/1.1 200 OK\r\n") for raw in raws), raws
    assert neutron.seen.incomplete == 0
    assert sum(read.endswith(body) for read in neutron.seen.reads) == 10


async def test_a_guest_request_with_bare_lf_is_still_refused(
    proxy: dict[str, int], neutron: NeutronAgent
) -> None:
    raw = await guest(
        proxy[NETWORK], b"GET " + INSTANCE_ID_PATH.encode() + b" HTTP/1.1\nHost: x\n\n"
    )
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in raw
    assert neutron.seen.reads == []


async def test_a_burst_against_the_backlog_of_5_fails_no_guest(
    proxy: dict[str, int], neutron: NeutronAgent
) -> None:
    # 200 guests at once, a new connection each (as cloud-init), a third of them unknown.
    targets = [(proxy[NETWORK], proxy[ROUTER], proxy[UNKNOWN])[n % 3] for n in range(200)]
    raws = await asyncio.gather(*(guest(port, get(INSTANCE_ID_PATH, CLOSE)) for port in targets))
    statuses = [raw.split(b" ", 2)[1] if raw else b"none" for raw in raws]
    expected = [b"404" if port == proxy[UNKNOWN] else b"200" for port in targets]
    assert statuses == expected
    for raw, port in zip(raws, targets, strict=True):
        if port != proxy[UNKNOWN]:
            assert raw.endswith(b"\r\n\r\n" + INSTANCE.encode())
    assert neutron.seen.incomplete == 0
    assert len(neutron.seen.reads) >= 200
