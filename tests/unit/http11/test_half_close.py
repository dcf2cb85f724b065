"""A client that half-closes (shuts its sending side down) after its requests is answered."""

from __future__ import annotations

import asyncio
import json
import time

from metastack.http11 import HttpServer

SLOW = b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n"


async def half_closed(path: str, raw: bytes) -> bytes:
    """Send `raw`, shut the sending side down, and read everything until the server closes."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Responses framed by Content-Length, in order; every byte must belong to one."""
    found = []
    while raw:
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep, f"unframed bytes: {head!r}"
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, raw[:length]))
        raw = raw[length:]
    return found


async def test_a_slow_answer_still_goes_out(echo_server: tuple[str, HttpServer]) -> None:
    for raw in (b"GET /sleep HTTP/1.0\r\n\r\n", SLOW):
        [(status, headers, body)] = answers(await half_closed(echo_server[0], raw))
        assert (status, headers["connection"]) == (200, "close")
        assert json.loads(body)["target"] == "/sleep"


async def test_pipelined_requests_are_all_answered_in_order(
    echo_server: tuple[str, HttpServer],
) -> None:
    raw = SLOW + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" + b"POST /c HTTP/1.1\r\nHost: x\r\n"
    raw += b"Content-Length: 2\r\n\r\nhi"
    got = answers(await half_closed(echo_server[0], raw))
    assert [(s, json.loads(b)["target"]) for s, _, b in got] == [
        (200, "/sleep"),
        (200, "/b"),
        (200, "/c"),
    ]
    assert json.loads(got[2][2])["body"] == "hi"
    # Only the last answer says the connection ends.
    assert [h.get("connection") for _, h, _ in got] == [None, None, "close"]


async def test_a_request_cut_short_is_refused_after_the_complete_ones(
    echo_server: tuple[str, HttpServer],
) -> None:
    path = echo_server[0]
    began = time.monotonic()
    got = answers(await half_closed(path, SLOW + b"GET /cut HTTP/1.1\r\nHost"))
    assert [(s, h.get("connection")) for s, h, _ in got] == [(200, None), (400, "close")]
    assert json.loads(got[0][2])["target"] == "/sleep"
    # No head deadline to wait for: the end of input settles it (header_timeout is 0.3 s).
    [(status, headers, _)] = answers(await half_closed(path, b"GET / HTTP/1.1\r\n"))
    assert (status, headers["connection"]) == (400, "close")
    body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc"
    assert [s for s, _, _ in answers(await half_closed(path, body))] == [400]
    assert time.monotonic() - began < 0.3 + 0.25


async def test_nothing_sent_then_half_closed_is_closed_silently(
    echo_server: tuple[str, HttpServer],
) -> None:
    path, server = echo_server
    assert await half_closed(path, b"") == b""
    await asyncio.sleep(0.05)
    assert not server.connections


async def test_a_malformed_request_before_the_end_is_answered_once(
    echo_server: tuple[str, HttpServer],
) -> None:
    got = answers(await half_closed(echo_server[0], b"GET / HTTP/1.1\r\nHost: x\nBad\r\n\r\n"))
    assert [(s, h["connection"]) for s, h, _ in got] == [(400, "close")]


async def test_the_connection_is_released_after_the_last_answer(
    echo_server: tuple[str, HttpServer],
) -> None:
    path, server = echo_server
    got = answers(await half_closed(path, SLOW + SLOW))
    assert [s for s, _, _ in got] == [200, 200]
    await asyncio.sleep(0.05)
    assert not server.connections
