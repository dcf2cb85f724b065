"""Forwarding through a listener to a fake agent, and the control API."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from metastack.http11 import Limits, Request
from metastack.proxy.config import ListenerConfig
from metastack.proxy.control import ControlHandler
from metastack.proxy.forward import Forwarder
from metastack.proxy.listeners import Listeners
from metastack.proxy.upstream import AgentClient


def make_listeners(agent_path: str, timeout: float = 2.0) -> Listeners:
    client = AgentClient(agent_path, connect_timeout=1.0, pool_size=4)
    forwarder = Forwarder(client, upstream_timeout=timeout)
    return Listeners(forwarder, Limits(), backlog=16)


@pytest.fixture
async def listeners(agent_path: str) -> AsyncIterator[Listeners]:
    held = make_listeners(agent_path, timeout=0.5)
    yield held
    await held.close(0.1)
    await held.forwarder.client.close()


async def http(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if x)}
        length = 0 if raw.startswith(b"HEAD") else int(headers.get("content-length", "0"))
        body = await reader.readexactly(length)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()
        await writer.wait_closed()


async def test_forward_rewrites_identity(agent: str, listeners: Listeners, free_port: int) -> None:
    await listeners.add(ListenerConfig(host="127.0.0.1", port=free_port, network_id="net-1"))
    raw = (
        b"POST /openstack/latest/password?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX-NEUTRON-ROUTER-ID: evil\r\n"
        b"X-Neutron-Network-ID: evil\r\nX-Instance-ID-Signature: s\r\nx-tenant-id: t\r\n"
        b"Forwarded: for=1.2.3.4\r\nX-OVN-Network-ID: o\r\nContent-Length: 4\r\n\r\nsecr"
    )
    status, headers, body = await http(free_port, raw)
    assert status == 200
    assert headers["x-agent"] == "fake"
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
        "POST",
        "/openstack/latest/password",
        "x=1",
        "secr",
    )
    names = [k.lower() for k, _ in seen["headers"]]
    assert names == [
        "host",
        "x-forwarded-for",
        "x-neutron-network-id",
        "content-length",
    ]
    assert dict(seen["headers"])["X-Forwarded-For"] == "127.0.0.1"
    assert dict(seen["headers"])["X-Neutron-Network-ID"] == "net-1"


async def test_agent_down_is_503_fast(listeners: Listeners, free_port: int) -> None:
    await listeners.add(ListenerConfig(host="127.0.0.1", port=free_port, router_id="r-1"))
    started = time.monotonic()
    status, _, _ = await http(free_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503
    assert time.monotonic() - started < 0.5


async def test_agent_slow_is_504(agent: str, listeners: Listeners, free_port: int) -> None:
    await listeners.add(ListenerConfig(host="127.0.0.1", port=free_port, router_id="r-1"))
    started = time.monotonic()
    status, _, _ = await http(free_port, b"GET /slow?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 504
    assert 0.4 < time.monotonic() - started < 2


async def test_keep_alive_reuses_agent_connection(
    agent: str, listeners: Listeners, free_port: int
) -> None:
    await listeners.add(ListenerConfig(host="127.0.0.1", port=free_port, network_id="n"))
    for _ in range(3):
        status, _, _ = await http(free_port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        status, _, body = await http(free_port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(body)["path"] == "/x"
    assert len(listeners.forwarder.client._idle) == 1


async def test_half_closed_guest_gets_every_answer(
    agent: str, listeners: Listeners, free_port: int
) -> None:
    # `printf 'GET ...' | nc`: the guest shuts its side down right after its requests.
    await listeners.add(ListenerConfig(host="127.0.0.1", port=free_port, network_id="n"))
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"GET /a HTTP/1.0\r\n\r\nGET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.write_eof()
    raw = await asyncio.wait_for(reader.read(), 5)  # until the proxy closes
    writer.close()
    # HTTP/1.0 without keep-alive: its answer is the last (as without the half-close).
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["path"] == "/a"
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.write_eof()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    paths = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        paths.append(json.loads(raw[:length])["path"])
        raw = raw[length:]
    assert paths == ["/slow", "/b"]


def req(method: bytes, target: bytes, body: object = None) -> Request:
    data = b"" if body is None else json.dumps(body).encode()
    return Request(method, target, "1.1", [], data, True)


async def test_control_api(agent: str, listeners: Listeners, free_port: int) -> None:
    control = ControlHandler(listeners)
    spec = {"host": "127.0.0.1", "port": free_port, "network_id": "n-1"}
    assert (await control(req(b"POST", b"/listeners", spec), "")).status == 201
    assert (await control(req(b"POST", b"/listeners", spec), "")).status == 200
    other = {**spec, "network_id": "n-2"}
    assert (await control(req(b"POST", b"/listeners", other), "")).status == 409
    bad = {**spec, "network_id": "x\r\nX-Instance-ID: 1"}
    assert (await control(req(b"POST", b"/listeners", bad), "")).status == 400
    missing = {**spec, "netns": "ms-no-such-namespace"}
    assert (await control(req(b"POST", b"/listeners", missing), "")).status == 422
    listed = json.loads((await control(req(b"GET", b"/listeners"), "")).body)
    assert listed == {"listeners": [spec]}
    status, _, _body = await http(free_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    gone = await control(req(b"DELETE", b"/listeners?netns=&port=%d" % free_port), "")
    assert json.loads(gone.body) == {"removed": [spec]}
    with pytest.raises(OSError):
        await http(free_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    put = await control(req(b"PUT", b"/listeners", {"listeners": [other]}), "")
    assert json.loads(put.body)["added"] == [other]
    put = await control(req(b"PUT", b"/listeners", {"listeners": []}), "")
    assert json.loads(put.body)["removed"] == [other]
    assert (await control(req(b"DELETE", b"/listeners"), "")).status == 400
    health = json.loads((await control(req(b"GET", b"/health"), "")).body)
    assert health == {"status": "ok", "listeners": 0}


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_listener_keeps_the_configured_backlog(agent_path: str, free_port: int) -> None:
    client = AgentClient(agent_path, connect_timeout=1.0, pool_size=4)
    forwarder = Forwarder(client, upstream_timeout=1.0)
    held = Listeners(forwarder, Limits(), backlog=777)
    try:
        await held.add(ListenerConfig(host="127.0.0.1", port=free_port, network_id="net-1"))
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{free_port}"], capture_output=True, text=True, check=True
        ).stdout
        assert out.split()[2] == "777", out  # Send-Q of a listener: its backlog
    finally:
        await held.close(0.1)
        await client.close()
