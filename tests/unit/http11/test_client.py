"""The pooled client: reuse, the closed-connection retry, timeouts, framing, TCP and TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from metastack.http11 import (
    ClientResponse,
    ConnectFailed,
    Endpoint,
    HttpProtocol,
    HttpServer,
    Pool,
    Request,
    Response,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
)
from unit.http11.servers import LIMITS, echo

Scripted = Callable[[list[bytes | None]], Awaitable[tuple[str, list[bytes]]]]
GET = encode_request(b"GET", b"/x?a=1", [(b"Host", b"h")])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"


def unix_pool(path: str, size: int = 4) -> Pool:
    return Pool(Endpoint.unix(path), connect_timeout=1.0, pool_size=size)


async def test_connections_are_reused(echo_server: tuple[str, HttpServer]) -> None:
    path, server = echo_server
    pool = unix_pool(path)
    for method in (b"GET", b"HEAD", b"GET", b"POST", b"GET"):
        data = encode_request(method, b"/r", [(b"Host", b"h")], b"hi" if method == b"POST" else b"")
        response = await pool.request(data, timeout=1.0, retry=True, is_head=method == b"HEAD")
        assert response.status == 200
        if method != b"HEAD":
            assert json.loads(response.body)["method"] == method.decode()
    assert len(server.connections) == 1
    assert pool.idle_connections() == 1
    await pool.close()


async def test_request_bytes(echo_server: tuple[str, HttpServer]) -> None:
    pool = unix_pool(echo_server[0])
    data = encode_request(b"PUT", b"/p?q=%2F", [(b"Host", b"h"), (b"X-A", b"1")])
    seen = json.loads((await pool.request(data, timeout=1.0, retry=False)).body)
    assert seen["target"] == "/p?q=%2F"
    assert seen["headers"] == [["Host", "h"], ["X-A", "1"], ["Content-Length", "0"]]
    await pool.close()


async def test_pool_keeps_at_most_pool_size_idle(echo_server: tuple[str, HttpServer]) -> None:
    pool = unix_pool(echo_server[0], size=1)
    sleep = encode_request(b"GET", b"/sleep", [(b"Host", b"h")])
    await asyncio.gather(*(pool.request(sleep, timeout=2.0, retry=True) for _ in range(3)))
    assert pool.idle_connections() == 1
    await pool.close()


async def test_connection_closed_by_the_server_while_idle_is_skipped(
    echo_server: tuple[str, HttpServer],
) -> None:
    pool = unix_pool(echo_server[0])
    await pool.request(GET, timeout=1.0, retry=False)
    await asyncio.sleep(0.8)  # past the server's keep-alive timeout
    assert (await pool.request(GET, timeout=1.0, retry=False)).status == 200
    await pool.close()


async def test_closed_pooled_connection_is_retried_once_for_idempotent(
    scripted: Scripted,
) -> None:
    path, log = await scripted([OK, b"", OK])  # the second request finds the peer gone
    pool = unix_pool(path)
    assert (await pool.request(GET, timeout=1.0, retry=True)).body == b"ok"
    assert (await pool.request(GET, timeout=1.0, retry=True)).body == b"ok"
    assert log.count(b"CONNECT") == 2
    await pool.close()

    path, log = await scripted([OK, b"", OK])
    pool = unix_pool(path)
    await pool.request(GET, timeout=1.0, retry=False)
    with pytest.raises(UpstreamBroken):
        await pool.request(GET, timeout=1.0, retry=False)  # a POST may have been applied
    assert log.count(b"CONNECT") == 1
    await pool.close()


async def test_no_answer_is_a_timeout_and_the_connection_is_dropped(scripted: Scripted) -> None:
    path, _ = await scripted([None])
    pool = unix_pool(path)
    began = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await pool.request(GET, timeout=0.3, retry=True)
    assert 0.25 < time.monotonic() - began < 0.6
    assert pool.idle_connections() == 0


async def test_nothing_listening_is_connect_failed(tmp_path: Path) -> None:
    pool = unix_pool(str(tmp_path / "none.sock"))
    with pytest.raises(ConnectFailed):
        await pool.request(GET, timeout=1.0, retry=True)


@pytest.mark.parametrize(
    ("reply", "body", "reused"),
    [
        (CHUNKED, b"abc", True),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz", b"z", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz", b"z", False),
    ],
)
async def test_response_framing(
    scripted: Scripted, reply: bytes, body: bytes, reused: bool
) -> None:
    path, _ = await scripted([reply])
    pool = unix_pool(path)
    response = await pool.request(GET, timeout=1.0, retry=False)
    assert response.body == body
    assert pool.idle_connections() == int(reused)
    await pool.close()


async def test_body_until_close_and_malformed_reply(scripted: Scripted, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()

    class UntilClose(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"HTTP/1.1 200 OK\r\n\r\nto the end")
            self.transport.close()

    server = await loop.create_unix_server(UntilClose, str(tmp_path / "eof.sock"))
    pool = unix_pool(str(tmp_path / "eof.sock"))
    assert (await pool.request(GET, timeout=1.0, retry=False)).body == b"to the end"
    server.close()

    path, _ = await scripted([b"HTTP/1.1 abc\r\n\r\n"])
    with pytest.raises(UpstreamBroken):
        await unix_pool(path).request(GET, timeout=1.0, retry=True)


def test_endpoint_from_url() -> None:
    api = Endpoint.from_url("http://10.0.0.1:8775/")
    assert (api.address, api.port, api.host, api.base_path, api.tls) == (
        "10.0.0.1",
        8775,
        b"10.0.0.1:8775",
        b"",
        False,
    )
    v6 = Endpoint.from_url("https://[fd00::1]/meta")
    assert (v6.address, v6.port, v6.host, v6.base_path, v6.tls) == (
        "fd00::1",
        443,
        b"[fd00::1]",
        b"/meta",
        True,
    )
    for bad in ("ftp://h", "http://", "http://h/?q=1"):
        with pytest.raises(ValueError):
            Endpoint.from_url(bad)


async def test_tcp(unused_tcp_socket: socket.socket) -> None:
    server = await HttpServer.start(echo, LIMITS, unused_tcp_socket)
    port = unused_tcp_socket.getsockname()[1]
    pool = Pool(Endpoint.from_url(f"http://127.0.0.1:{port}"), connect_timeout=1, pool_size=2)
    data = encode_request(b"GET", b"/t", [(b"Host", pool.endpoint.host)])
    assert json.loads((await pool.request(data, timeout=1.0, retry=True)).body)["target"] == "/t"
    await pool.close()
    await server.close(0.1)


@pytest.fixture
def unused_tcp_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


async def test_tls_verifies_the_server(tmp_path: Path, unused_tcp_socket: socket.socket) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
             "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server",
             "-keyout", f"{d}/s.key", "-out", f"{d}/s.csr")  # fmt: skip
    _openssl("x509", "-req", "-in", f"{d}/s.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext",
             "-out", f"{d}/s.pem")  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(d / "s.pem", d / "s.key")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(echo, LIMITS), sock=unused_tcp_socket, ssl=server_ctx
    )
    endpoint = Endpoint.from_url(f"https://127.0.0.1:{unused_tcp_socket.getsockname()[1]}")
    data = encode_request(b"GET", b"/tls", [(b"Host", endpoint.host)])
    trusted = Pool(
        endpoint,
        connect_timeout=2,
        pool_size=2,
        ssl_context=ssl.create_default_context(cafile=d / "ca.pem"),
    )
    for _ in range(2):  # the second one over the pooled TLS connection
        response = await trusted.request(data, timeout=2.0, retry=True)
        assert json.loads(response.body)["target"] == "/tls"
    assert trusted.idle_connections() == 1
    await trusted.close()
    with pytest.raises(ConnectFailed):  # system CAs do not know this one
        await Pool(endpoint, connect_timeout=2, pool_size=2).request(data, timeout=2.0, retry=True)
    server.close()
    await server.wait_closed()


class Gated:
    """A handler that holds every request until released; records arrival order and the
    most requests it ever held at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.held = 0
        self.most = 0
        self.order: list[bytes] = []

    async def __call__(self, request: Request, peer: str) -> Response:
        self.order.append(request.target)
        self.held += 1
        self.most = max(self.most, self.held)
        try:
            if request.target != b"/now":
                await self.gate.wait()
        finally:
            self.held -= 1
        return Response(200, b"OK", [], request.target)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[str, Gated]]:
    path = str(tmp_path / "gated.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    handler = Gated()
    server = await HttpServer.start(handler, LIMITS, sock, backlog=64)
    yield path, handler
    handler.gate.set()
    await server.close(0.1)


def limited(path: str, concurrency: int) -> Pool:
    """A pool whose requests keep their turn until answered (no early give-up)."""
    return Pool(
        Endpoint.unix(path),
        connect_timeout=1.0,
        pool_size=8,
        concurrency=concurrency,
        turn_seconds=30,
    )


def get(target: bytes) -> bytes:
    return encode_request(b"GET", target, [(b"Host", b"h")])


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_concurrency_limit_serves_in_arrival_order(gated: tuple[str, Gated]) -> None:
    path, handler = gated
    pool = limited(path, 2)
    calls = [
        asyncio.ensure_future(pool.request(get(b"/%d" % i), timeout=5.0, retry=True))
        for i in range(7)
    ]
    await settle()
    assert handler.held == 2
    assert pool.in_flight() == (2, 5)
    handler.gate.set()
    bodies = [r.body for r in await asyncio.gather(*calls)]
    assert bodies == [b"/%d" % i for i in range(7)]
    assert handler.most == 2
    assert handler.order == [b"/%d" % i for i in range(7)]
    assert pool.in_flight() == (0, 0)
    assert pool.idle_connections() <= 2  # two turns need two connections, not seven
    await pool.close()


async def test_waiting_for_a_turn_counts_against_the_timeout(gated: tuple[str, Gated]) -> None:
    path, handler = gated
    pool = limited(path, 1)
    first = asyncio.ensure_future(pool.request(get(b"/held"), timeout=5.0, retry=True))
    await settle()
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await pool.request(get(b"/late"), timeout=0.2, retry=True)
    assert 0.15 < time.monotonic() - started < 1.0
    assert b"/late" not in handler.order  # it never reached the peer
    handler.gate.set()
    assert (await first).status == 200
    assert (await pool.request(get(b"/after"), timeout=1.0, retry=True)).body == b"/after"
    assert pool.in_flight() == (0, 0)
    await pool.close()


Pending = asyncio.Future[ClientResponse]


async def in_line(pool: Pool) -> tuple[Pending, Pending, Pending]:
    """/a holding a one-turn pool's turn, then /b and /c waiting behind it."""
    first = asyncio.ensure_future(pool.request(get(b"/a"), timeout=5.0, retry=True))
    await settle()
    second = asyncio.ensure_future(pool.request(get(b"/b"), timeout=5.0, retry=True))
    third = asyncio.ensure_future(pool.request(get(b"/c"), timeout=5.0, retry=True))
    await settle()
    assert pool.in_flight() == (1, 2)
    return first, second, third


async def b_was_skipped(pool: Pool, handler: Gated, line: tuple[Pending, ...]) -> None:
    """Let the line through: /a and /c answered, /b cancelled and never sent."""
    first, second, third = line
    handler.gate.set()
    assert (await first).body == b"/a"
    assert (await third).body == b"/c"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert handler.order == [b"/a", b"/c"]
    assert pool.in_flight() == (0, 0)
    await pool.close()


async def test_cancelled_waiters_do_not_keep_a_turn(gated: tuple[str, Gated]) -> None:
    path, handler = gated
    pool = limited(path, 1)
    line = await in_line(pool)
    line[1].cancel()
    await b_was_skipped(pool, handler, line)


async def test_a_turn_granted_then_cancelled_passes_on(
    gated: tuple[str, Gated], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, handler = gated
    pool = limited(path, 1)
    line = await in_line(pool)
    release = pool._release

    def release_then_cancel() -> None:
        # The turn goes to /b, which is cancelled before it can run.
        monkeypatch.setattr(pool, "_release", release)
        release()
        line[1].cancel()

    monkeypatch.setattr(pool, "_release", release_then_cancel)
    await b_was_skipped(pool, handler, line)


async def test_unqueued_requests_skip_the_limit(gated: tuple[str, Gated]) -> None:
    path, handler = gated
    pool = limited(path, 1)
    held = asyncio.ensure_future(pool.request(get(b"/held"), timeout=5.0, retry=True))
    await settle()
    response = await pool.request(get(b"/now"), timeout=1.0, retry=True, queued=False)
    assert response.body == b"/now"
    assert pool.in_flight() == (1, 0)
    handler.gate.set()
    await held
    await pool.close()


async def test_a_slow_request_gives_its_turn_up(gated: tuple[str, Gated]) -> None:
    path, handler = gated
    pool = Pool(
        Endpoint.unix(path), connect_timeout=1.0, pool_size=8, concurrency=1, turn_seconds=0.2
    )
    slow = asyncio.ensure_future(pool.request(get(b"/slow"), timeout=5.0, retry=True))
    await settle()
    started = time.monotonic()
    # /now is answered at once, but only once /slow has held the one turn for 0.2 s.
    assert (await pool.request(get(b"/now"), timeout=5.0, retry=True)).body == b"/now"
    assert 0.0 < time.monotonic() - started < 1.0
    assert not slow.done()
    assert pool.in_flight() == (0, 0)  # /slow no longer counts
    handler.gate.set()
    assert (await slow).body == b"/slow"
    assert pool.in_flight() == (0, 0)
    await pool.close()
