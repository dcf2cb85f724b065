"""The pooled client against peers like neutron's agent: bare LF line ends, one answer per
connection, a listen backlog that fills up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metastack.http11 import ConnectFailed, Endpoint, Pool, UpstreamBroken, encode_request
from unit.http11.conftest import Scripted

GET = encode_request(b"GET", b"/x", [(b"Host", b"h")])
POST = encode_request(b"POST", b"/p", [(b"Host", b"h")], b"secret")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
LF_404 = (
    b"HTTP/1.1 404 Not Found\nContent-Type: text/plain; charset=UTF-8\nConnection: close\n"
    b"Content-Length: 9\n\nnot found"
)


def pool(path: str, *, lenient: bool = True, connect_timeout: float = 1.0) -> Pool:
    return Pool(
        Endpoint.unix(path),
        connect_timeout=connect_timeout,
        pool_size=4,
        lenient_responses=lenient,
    )


@pytest.mark.parametrize(
    ("reply", "status", "body"),
    [
        (LF_404, 404, b"not found"),
        # Mixed line ends, and a body read to the end of the connection.
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nConnection: close\n\nuntil the end", 200,
         b"until the end"),
        (b"HTTP/1.1 204 No Content\n\n", 204, b""),
    ],
)  # fmt: skip
async def test_bare_lf_answers_are_read_when_lenient(
    tmp_path: Path, reply: bytes, status: int, body: bytes
) -> None:
    path = str(tmp_path / "lf.sock")
    with one_answer_per_connection(path, [], reply):
        lenient = pool(path)
        response = await lenient.request(GET, timeout=1.0, retry=False)
        assert (response.status, response.body) == (status, body)
        await lenient.close()


async def test_bare_lf_answers_are_refused_by_default(scripted: Scripted) -> None:
    path, _ = await scripted([LF_404])
    with pytest.raises(UpstreamBroken):
        await pool(path, lenient=False).request(GET, timeout=1.0, retry=False)


async def test_leniency_stops_at_line_ends(scripted: Scripted) -> None:
    # A CR that ends nothing, or a header line without a colon, is still malformed.
    for reply in (
        b"HTTP/1.1 200 OK\rContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\nContent-Length 1\n\nx",
        b"HTTP/1.1 200 OK\nContent-Length: 1\nContent-Length: 2\n\nxy",
    ):
        path, _ = await scripted([reply])
        with pytest.raises(UpstreamBroken):
            await pool(path).request(GET, timeout=1.0, retry=False)


@contextlib.contextmanager
def one_answer_per_connection(path: str, log: list[bytes], reply: bytes = OK) -> Iterator[None]:
    """A threaded peer that reads one request, answers (by default without Connection:
    close, as neutron's agent relays a 200) and closes the connection."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                log.append(conn.recv(4096))
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)
        server.close()


async def test_a_request_the_closed_peer_never_got_is_sent_again(tmp_path: Path) -> None:
    path = str(tmp_path / "once.sock")
    log: list[bytes] = []
    with one_answer_per_connection(path, log):
        client = pool(path)
        assert (await client.request(POST, timeout=1.0, retry=False)).body == b"ok"
        # The peer closes right after answering; the loop has not noticed yet when the next
        # request takes the pooled connection, whose write then fails at once (EPIPE).
        time.sleep(0.1)
        assert client.idle_connections() == 1
        assert (await client.request(POST, timeout=1.0, retry=False)).body == b"ok"
        assert log == [POST, POST]
        await client.close()


@contextlib.contextmanager
def full_backlog(path: str) -> Iterator[socket.socket]:
    """A listener that accepts nobody yet, its backlog filled with idle connections."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    fillers: list[socket.socket] = []
    try:
        while True:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            try:
                filler.connect(path)
            except BlockingIOError:
                break
        yield listener
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_full_backlog_is_waited_out(tmp_path: Path) -> None:
    path = str(tmp_path / "busy.sock")
    with full_backlog(path) as listener:

        def accept_later() -> None:
            time.sleep(0.2)  # then the peer takes its queue in, and answers what it gets
            listener.settimeout(1.0)
            for _ in range(8):
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    return
                conn.settimeout(0.3)
                with contextlib.suppress(TimeoutError), conn:
                    if conn.recv(4096):
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        return

        thread = threading.Thread(target=accept_later, daemon=True)
        thread.start()
        began = time.monotonic()
        response = await pool(path).request(GET, timeout=2.0, retry=False)
        assert response.body == b"ok"
        assert 0.15 < time.monotonic() - began < 1.5
        await asyncio.to_thread(thread.join, 2)


async def test_a_backlog_full_past_the_connect_timeout_is_connect_failed(tmp_path: Path) -> None:
    path = str(tmp_path / "stuck.sock")
    with full_backlog(path):
        began = time.monotonic()
        with pytest.raises(ConnectFailed):
            await pool(path, connect_timeout=0.3).request(GET, timeout=2.0, retry=True)
        assert 0.25 < time.monotonic() - began < 0.8


async def test_nothing_listening_still_fails_at_once(tmp_path: Path) -> None:
    # A socket file nobody listens on (the agent was killed): refused, no waiting.
    path = str(tmp_path / "dead.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    began = time.monotonic()
    with pytest.raises(ConnectFailed):
        await pool(path).request(GET, timeout=2.0, retry=True)
    assert time.monotonic() - began < 0.1
