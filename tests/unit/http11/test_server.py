"""The server protocol: framing, limits, keep-alive, HTTP/1.0, timers, shutdown, encoding."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from metastack.http11 import HttpServer, Request, Response, encode_response


async def talk(path: str, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 2) == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
        (b"GET /" + b"u" * 3000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"a" * 101, 413),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"NOT HTTP\r\n\r\n", 400),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (b"GET /x\r\n\r\n", 400),  # HTTP/0.9: no version
        (b"GET /x HTTP/0.9\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ],
)
async def test_limits_answer_and_close(
    echo_server: tuple[str, HttpServer], raw: bytes, status: int
) -> None:
    reader, writer = await talk(echo_server[0], raw)
    got, headers, _ = await read_response(reader)
    assert (got, headers["connection"]) == (status, "close")
    assert await closed(reader)
    writer.close()


async def test_chunked_body_is_joined(echo_server: tuple[str, HttpServer]) -> None:
    raw = (
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    reader, writer = await talk(echo_server[0], raw)
    status, _, body = await read_response(reader)
    assert (status, json.loads(body)["body"]) == (200, "abcde")
    writer.close()


async def test_keep_alive_pipelined_in_order(echo_server: tuple[str, HttpServer]) -> None:
    reader, writer = await talk(
        echo_server[0],
        b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    first = json.loads((await read_response(reader))[2])["target"]
    second = json.loads((await read_response(reader))[2])["target"]
    assert (first, second) == ("/sleep", "/b")
    writer.close()


async def test_http10_keep_alive_only_when_asked(echo_server: tuple[str, HttpServer]) -> None:
    reader, writer = await talk(echo_server[0], b"GET / HTTP/1.0\r\n\r\n")
    assert (await read_response(reader))[1]["connection"] == "close"
    assert await closed(reader)
    writer.close()
    reader, writer = await talk(echo_server[0], b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _, headers, body = await read_response(reader)
    assert headers["connection"] == "keep-alive"
    assert json.loads(body)["version"] == "1.0"
    writer.close()


async def test_header_timeout_applies_after_a_keep_alive_reply(
    echo_server: tuple[str, HttpServer],
) -> None:
    # The connection timer is re-armed lazily; a slow second request must still get
    # the (shorter) header timeout, not the keep-alive one.
    reader, writer = await talk(echo_server[0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_response(reader)
    writer.write(b"GET /slow HTTP/1.1\r\n")
    began = time.monotonic()
    status, _, _ = await read_response(reader)
    assert status == 408
    assert time.monotonic() - began < 0.55  # header_timeout 0.3 s, keep-alive 0.6 s
    writer.close()


async def test_idle_keep_alive_connection_is_closed(echo_server: tuple[str, HttpServer]) -> None:
    reader, writer = await talk(echo_server[0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_response(reader)
    began = time.monotonic()
    assert await closed(reader)
    assert 0.4 < time.monotonic() - began < 1.5
    writer.close()


async def test_close_waits_for_the_reply_in_flight(echo_server: tuple[str, HttpServer]) -> None:
    path, server = echo_server
    reader, writer = await talk(path, b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_reader, idle_writer = await asyncio.open_unix_connection(path)
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(server.close(2.0))
    assert await closed(idle_reader)  # idle connections go at once
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (200, "close")
    await closing
    for w in (writer, idle_writer):
        w.close()


def test_encode_response_framing() -> None:
    get = Request(b"GET", b"/", "1.1", [], b"", True)
    head = Request(b"HEAD", b"/", "1.1", [], b"", True)
    ok = Response(200, b"OK", [(b"Content-Type", b"text/plain")], b"hello")
    assert encode_response(ok, get, True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
    # HEAD: no body; a length given by the handler (the GET's) is kept, not recomputed.
    relayed = Response(200, b"OK", [(b"content-length", b"42")])
    assert encode_response(relayed, head, False) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\nConnection: close\r\n\r\n"
    )
    assert encode_response(Response(204, b"No Content", [], b"x"), get, True) == (
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
