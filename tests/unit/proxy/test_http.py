"""The guest-side HTTP/1.1 protocol: framing, keep-alive, limits and timeouts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from metastack.http11 import HttpProtocol, Limits, Request, Response

Open = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def echo(request: Request, peer: str) -> Response:
    if request.target == b"/sleep":
        await asyncio.sleep(0.3)
    body = json.dumps(
        {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "body": request.body.decode(),
            "peer": peer,
        }
    ).encode()
    return Response(200, b"OK", [(b"Content-Type", b"application/json")], body)


@pytest.fixture
async def server() -> AsyncIterator[Open]:
    limits = Limits(
        max_header_bytes=2048,
        max_headers=20,
        max_body_bytes=100,
        header_timeout=0.5,
        keepalive_timeout=0.5,
    )
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: HttpProtocol(echo, limits), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    yield connect
    srv.close()
    await srv.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(open_: Open, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await open_()
    writer.write(raw)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_keep_alive_and_pipelining(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.write(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    targets = []
    for _ in range(3):
        status, headers, body = await read_response(reader)
        assert status == 200
        assert "connection" not in headers
        targets.append(json.loads(body)["target"])
    assert targets == ["/a", "/sleep", "/c"]
    assert json.loads(body)["peer"] == "127.0.0.1"
    writer.close()


async def test_http10_closes_unless_keep_alive(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (200, "close")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()

    reader, writer = await server()
    writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert headers["connection"] == "keep-alive"
    writer.write(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, _, body = await read_response(reader)
    assert json.loads(body)["target"] == "/again"
    writer.close()


async def test_chunked_body(server: Open) -> None:
    raw = (
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = await exchange(server, raw)
    assert status == 200
    assert json.loads(body)["body"] == "hello world"


async def test_expect_continue(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"ok")
    _status, _, body = await read_response(reader)
    assert json.loads(body)["body"] == "ok"
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
        (b"GET /" + b"u" * 3000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"a" * 101, 413),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 405),
        # Upgrade is ignored: answered normally, then the connection ends.
        (b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 200),
    ],
)
async def test_rejections_close(server: Open, raw: bytes, status: int) -> None:
    reader, writer = await server()
    writer.write(raw)
    got, headers, _ = await read_response(reader)
    assert (got, headers["connection"]) == (status, "close")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_slow_client_gets_408(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    status, _, _ = await read_response(reader)
    assert status == 408
    writer.close()


async def test_idle_connection_closed(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed silently after 0.5 s
    writer.close()


async def test_head_has_no_body(server: Open) -> None:
    reader, writer = await server()
    writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200")
    _, _, body = await read_response(reader)
    assert json.loads(body)["target"] == "/next"
    writer.close()
