"""Pool.abandon: an endpoint given up at once, each request failed as what it was (not
sent, sent and replayable, or sent and left to its answer), over real TCP sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from metastack.http11 import (
    ConnectFailed,
    Endpoint,
    NotSent,
    Pool,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
)

HEAD = [(b"Host", b"api")]


class Holding(asyncio.Protocol):
    """A peer that reads requests and never answers (a stopped process behind a live
    kernel: everything it is sent is acknowledged)."""

    def __init__(self, received: list[bytes]) -> None:
        self.received = received

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


@pytest.fixture
async def holding() -> AsyncIterator[tuple[Endpoint, list[bytes]]]:
    received: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: Holding(received), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    yield Endpoint("http", "127.0.0.1", port), received
    server.close()


@pytest.fixture
def unread() -> Iterator[Endpoint]:
    """A listener that accepts nothing, with a tiny receive buffer: a request too large for
    it is never wholly acknowledged."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield Endpoint("http", "127.0.0.1", listener.getsockname()[1])
    listener.close()


@pytest.fixture
def full_backlog() -> Iterator[Endpoint]:
    """A listener whose accept queue is full: further SYNs are dropped, connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
        fillers.append(filler)
    time.sleep(0.05)
    yield Endpoint("http", "127.0.0.1", address[1])
    for filler in fillers:
        filler.close()
    listener.close()


async def until(condition: object, timeout: float = 2.0) -> None:
    assert callable(condition)
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_a_sent_get_is_cut_off_as_broken_and_a_sent_post_is_left_alone(
    holding: tuple[Endpoint, list[bytes]],
) -> None:
    endpoint, received = holding
    pool = Pool(endpoint, connect_timeout=1.0, pool_size=4)
    get = asyncio.ensure_future(
        pool.request(encode_request(b"GET", b"/g", HEAD), timeout=5.0, retry=True)
    )
    post = asyncio.ensure_future(
        pool.request(encode_request(b"POST", b"/p", HEAD, b"pw"), timeout=0.8, retry=False)
    )
    await until(lambda: sum(chunk.count(b"HTTP/1.1") for chunk in received) == 2)
    await asyncio.sleep(0.05)  # the peer's TCP acknowledges both
    assert pool.abandon("probe timed out") == 1
    with pytest.raises(UpstreamBroken, match="probe timed out"):
        await get
    assert not post.done()  # it reached the peer: only its own answer or timeout ends it
    with pytest.raises(UpstreamTimeout):
        await post


# 64 KiB waits in the kernel's send queue (SIOCOUTQ), 4 MiB in the transport's buffer too.
@pytest.mark.parametrize("size", [64 << 10, 4 << 20])
async def test_a_request_the_peer_never_wholly_received_is_not_sent(
    unread: Endpoint, size: int
) -> None:
    pool = Pool(unread, connect_timeout=1.0, pool_size=4)
    body = b"x" * size
    post = asyncio.ensure_future(
        pool.request(encode_request(b"POST", b"/p", HEAD, body), timeout=5.0, retry=False)
    )
    await asyncio.sleep(0.2)
    assert not post.done()
    began = time.monotonic()
    assert pool.abandon("down") == 1
    with pytest.raises(NotSent, match="down"):
        await post
    assert time.monotonic() - began < 0.5


async def test_waiting_and_connecting_requests_are_not_sent(
    holding: tuple[Endpoint, list[bytes]], full_backlog: Endpoint
) -> None:
    endpoint, received = holding
    queued = Pool(endpoint, connect_timeout=1.0, pool_size=4, concurrency=1)
    data = encode_request(b"POST", b"/p", HEAD, b"pw")
    first = asyncio.ensure_future(queued.request(data, timeout=5.0, retry=False))
    second = asyncio.ensure_future(queued.request(data, timeout=5.0, retry=False))
    hanging = Pool(full_backlog, connect_timeout=5.0, pool_size=4)
    connecting = asyncio.ensure_future(hanging.request(data, timeout=5.0, retry=False))
    await until(lambda: len(received) == 1)
    await asyncio.sleep(0.2)
    assert queued.in_flight() == (1, 1)
    assert not connecting.done()
    began = time.monotonic()
    queued.abandon("down")
    hanging.abandon("down")
    with pytest.raises(NotSent):
        await second
    with pytest.raises(ConnectFailed):
        await connecting
    assert time.monotonic() - began < 0.5
    assert len(received) == 1  # the waiting POST never reached the peer
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first


class Answering(asyncio.Protocol):
    """A peer answering every request 200; records how each connection ended."""

    def __init__(self, endings: list[BaseException | None]) -> None:
        self.endings = endings
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.endings.append(exc)


async def test_idle_connections_are_reset() -> None:
    endings: list[BaseException | None] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: Answering(endings), "127.0.0.1", 0
    )
    endpoint = Endpoint("http", "127.0.0.1", server.sockets[0].getsockname()[1])
    pool = Pool(endpoint, connect_timeout=1.0, pool_size=4)
    response = await pool.request(encode_request(b"GET", b"/", HEAD), timeout=1.0, retry=True)
    assert (response.status, pool.idle_connections()) == (200, 1)
    assert pool.abandon("down") == 0
    assert pool.idle_connections() == 0
    await until(lambda: len(endings) == 1)
    assert isinstance(endings[0], ConnectionResetError)  # a reset, not a FIN
    server.close()
