"""Client side of HTTP/1.1: pooled keep-alive connections over unix sockets, TCP or TLS."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
from dataclasses import dataclass
from typing import cast

import httptools

from metastack.errors import UpstreamUnavailable
from metastack.http11.endpoint import Endpoint
from metastack.http11.message import Headers


class NotSent(UpstreamUnavailable):
    """The request never reached the peer: it waited for a turn or a connection, or the
    peer's TCP had not acknowledged all of it when the endpoint was abandoned. Sending it
    to another endpoint cannot make it happen twice."""


class ConnectFailed(NotSent):
    """No connection could be opened (refused, unreachable, TLS handshake, connect timeout)."""


class UpstreamTimeout(UpstreamUnavailable):
    """The peer accepted the request but did not answer in time."""


class UpstreamBroken(UpstreamUnavailable):
    """The peer closed the connection or sent a malformed response."""


@dataclass(slots=True)
class ClientResponse:
    """A complete response as received (headers in arrival order, raw)."""

    status: int
    reason: bytes
    headers: Headers
    body: bytes
    keep_alive: bool


BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# SO_LINGER on, 0 seconds: close() resets the connection and drops what is still queued.
_RESET = struct.pack("ii", 1, 0)


def encode_request(
    method: bytes, target: bytes, headers: Headers | bytes, body: bytes = b""
) -> bytes:
    """Request line, headers and body in one buffer; Content-Length added when there is a
    body or the method expects one. `headers` (pairs, or lines already encoded, each
    ending in CRLF) must carry Host."""
    if isinstance(headers, bytes):
        parts = [b"%s %s HTTP/1.1\r\n" % (method, target), headers]
    else:
        parts = [b"%s %s HTTP/1.1\r\n" % (method, target)]
        for name, value in headers:
            parts.append(b"%s: %s\r\n" % (name, value))
    if body or method in BODY_METHODS:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One connection carrying one request at a time; the reply is read whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        # Read the peer's status line and headers with bare LF line ends too (see Pool).
        self.lenient = False
        # The request's first write failed at once: the peer had closed, nothing reached it.
        self.undelivered = False
        self.waiter: asyncio.Future[ClientResponse] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        # The parser can read the next response only after a clean, non-HEAD one.
        self.parser_clean = False
        self.got_data = False
        self.is_head = False
        self.reason = b""
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.framed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def send(
        self, loop: asyncio.AbstractEventLoop, data: bytes, is_head: bool
    ) -> asyncio.Future[ClientResponse]:
        assert self.transport is not None
        self.waiter = loop.create_future()
        if not self.parser_clean or is_head:
            # llhttp cannot be told that a HEAD reply has no body: a fresh parser for it
            # (and for the response after it).
            self.parser = httptools.HttpResponseParser(self)
            if self.lenient:
                self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.parser_clean = False
        self.got_data = self.headers_done = self.framed = False
        self.is_head = is_head
        self.reason = b""
        self.headers = []
        self.body = []
        # One write: the head and a small body leave in one segment, for peers that read a
        # request with a single recv() (neutron's agent).
        self.transport.write(data)
        # A write that fails at once closes the transport before returning: the peer was
        # gone and got no byte of this request, so any request may be sent again.
        self.undelivered = self.transport.is_closing()
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        if self.parser is None or self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and not self.framed:
                self._finish(keep_alive=False)  # a body delimited by the connection's end
            else:
                self._fail(ConnectionResetError(f"connection closed: {exc or 'EOF'}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def timeout(self) -> None:
        self._fail(UpstreamTimeout("no answer in time"))

    def abandon(self, reason: str) -> None:
        """Reset the connection now, so nothing still queued for the peer is ever sent; the
        request in progress fails with NotSent if no complete copy of it reached the peer's
        TCP, else with UpstreamBroken."""
        transport = self.transport
        if self.waiter is not None and not self.waiter.done():
            unsent = not self.got_data and transport is not None and _unacknowledged(transport)
            self.waiter.set_exception((NotSent if unsent else UpstreamBroken)(reason))
        self.closed = True
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None and not transport.is_closing():
                with contextlib.suppress(OSError):  # a reset needs linger 0 (no FIN)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def _finish(self, keep_alive: bool) -> None:
        assert self.parser is not None and self.waiter is not None
        if not self.waiter.done():
            status = self.parser.get_status_code()
            body = b"".join(self.body) if self.body else b""
            self.waiter.set_result(
                ClientResponse(status, self.reason, self.headers, body, keep_alive)
            )

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        size = len(name)
        if (size == 14 or size == 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.is_head:
            assert self.parser is not None
            self._finish(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.parser_clean = not self.is_head
        self._finish(self.parser.should_keep_alive())


async def _connect_unix(path: str) -> socket.socket:
    """A connected non-blocking unix socket; waits (cancellable) while the backlog is full.

    A unix socket's connect() never blocks half-way: it connects, or fails with EAGAIN
    when the listener's backlog is full (neutron's agent listens with a backlog of 5), a
    condition that passes as soon as the peer accepts. asyncio would wait for the socket
    to become writable instead and then take it for connected; uvloop fails at once.
    """
    pause = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
            continue
        except BaseException:
            sock.close()
            raise
        return sock


def _unacknowledged(transport: asyncio.Transport) -> bool:
    """Whether part of what was written is still unacknowledged by the peer's TCP (in our
    buffer or the kernel's send queue: SIOCOUTQ); False when that cannot be known."""
    if transport.get_write_buffer_size():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return False
    return bool(struct.unpack("i", queued)[0])


def _expire(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_exception(UpstreamTimeout("no free connection in time"))


class _Turn:
    """A request's hold on one of a pool's turns, given up once (at the end, or early)."""

    __slots__ = ("held", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.held = True

    def give_up(self) -> None:
        if self.held:
            self.held = False
            self.pool._release()


class Pool:
    """Requests to one endpoint over reused keep-alive connections (at most `pool_size` idle).

    With `concurrency` > 0, at most that many requests are in flight at once; the others
    wait their turn in arrival order. A burst then queues here, first come first served,
    instead of as thousands of sockets in the peer's event loop, where whichever is read
    first is served first: the same throughput, a far narrower spread of waiting times,
    and a few connections to open instead of one per waiting request. A request gives its
    turn up after `turn_seconds` even if it is still waiting for its answer: a slow
    upstream (a slow vendor data target, a long poll) can hold the others back that long
    at most, and under such load the limit lifts rather than queueing everyone behind it.

    `lenient_responses` reads status lines and headers whose lines end in a bare LF, as
    haproxy does (neutron's metadata agent writes its own error answers so); the rest of
    the framing stays strict. A unix socket whose listen backlog is full (EAGAIN) is tried
    again, with growing pauses, until the connect timeout runs out.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float,
        pool_size: int,
        ssl_context: ssl.SSLContext | None = None,
        concurrency: int = 0,
        turn_seconds: float = 0.5,
        lenient_responses: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.lenient_responses = lenient_responses
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self.concurrency = concurrency
        self.turn_seconds = turn_seconds
        self._active = 0
        # Requests waiting for a turn; a granted turn passes the releasing request's slot on.
        self._turns: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None
        if endpoint.tls:
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._idle: collections.deque[_Connection] = collections.deque()
        # Exchanges in progress (with whether their request may be sent again) and connects
        # under way: what abandon() cuts short.
        self._busy: dict[_Connection, bool] = {}
        self._connecting: set[asyncio.Timeout] = set()
        # The loop of the first request: pooled connections belong to it anyway, and
        # Python 3.11's get_running_loop() makes a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        limit = asyncio.timeout(max(0.0, timeout))
        self._connecting.add(limit)
        try:
            async with limit:
                if endpoint.scheme == "unix":
                    sock = await _connect_unix(endpoint.address)
                    _, conn = await loop.create_unix_connection(_Connection, sock=sock)
                else:
                    _, conn = await loop.create_connection(
                        _Connection,
                        endpoint.address,
                        endpoint.port,
                        ssl=self._ssl,
                        server_hostname=endpoint.address if self._ssl is not None else None,
                    )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{endpoint}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            self._connecting.discard(limit)
        conn.lenient = self.lenient_responses
        return conn

    def _acquire_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def request(
        self,
        data: bytes,
        *,
        timeout: float,
        retry: bool,
        is_head: bool = False,
        queued: bool = True,
    ) -> ClientResponse:
        """Send one serialised request (see :func:`encode_request`); the reply is read whole.

        `timeout` bounds the wait for a turn, connect and exchange, enforced by loop
        timers rather than a task per call: ConnectFailed if no connection opened in time,
        UpstreamTimeout if no turn came or the answer did not arrive, UpstreamBroken if the
        peer closed or garbled it. `retry` allows one more attempt on a fresh connection
        when a pooled one turns out to have been closed by the peer before it answered
        (safe for idempotent methods). `queued=False` skips the concurrency limit: for
        requests that may legitimately wait minutes (long polls) and must not hold a turn.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not queued or not self.concurrency:
            return await self._request(loop, data, deadline, retry, is_head)
        if self._active < self.concurrency:
            self._active += 1  # nobody waits while a turn is free: no one is overtaken
        else:
            await self._wait_turn(loop, deadline)
        turn = _Turn(self)
        timer = loop.call_later(self.turn_seconds, turn.give_up)
        try:
            return await self._request(loop, data, deadline, retry, is_head)
        finally:
            timer.cancel()
            turn.give_up()

    async def _wait_turn(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        turn: asyncio.Future[None] = loop.create_future()
        self._turns.append(turn)
        timer = loop.call_at(deadline, _expire, turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()  # granted, then cancelled before it could run: pass it on
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        turns = self._turns
        while turns:
            turn = turns.popleft()
            if not turn.done():  # skip those that timed out or were cancelled
                turn.set_result(None)
                return
        self._active -= 1

    def in_flight(self) -> tuple[int, int]:
        """(requests holding a turn, requests waiting for one); both 0 without a limit.
        Requests that gave their turn up early are in neither."""
        return self._active, sum(1 for turn in self._turns if not turn.done())

    async def _request(
        self,
        loop: asyncio.AbstractEventLoop,
        data: bytes,
        deadline: float,
        retry: bool,
        is_head: bool,
    ) -> ClientResponse:
        timeout = deadline - loop.time()
        conn = self._acquire_idle()
        if conn is None:
            conn = await self._connect(min(self.connect_timeout, timeout))
        try:
            response = await self._exchange(loop, conn, data, is_head, deadline, retry)
        except ConnectionError as exc:
            # A pooled connection the peer had closed: sent again on a fresh one if the
            # method may be repeated, or if the peer cannot have seen any of it.
            if not ((retry or conn.undelivered) and conn.reused and not conn.got_data):
                raise UpstreamBroken(f"{self.endpoint}: {exc}") from exc
            conn = await self._connect(min(self.connect_timeout, deadline - loop.time()))
            try:
                response = await self._exchange(loop, conn, data, is_head, deadline, retry)
            except ConnectionError as exc2:
                raise UpstreamBroken(f"{self.endpoint}: {exc2}") from exc2
        if response.keep_alive and not conn.closed and len(self._idle) < self.pool_size:
            conn.reused = True
            conn.waiter = None
            self._idle.append(conn)
        else:
            conn.close()
        return response

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        data: bytes,
        is_head: bool,
        deadline: float,
        retry: bool,
    ) -> ClientResponse:
        waiter = conn.send(loop, data, is_head)
        timer = loop.call_at(deadline, conn.timeout)
        self._busy[conn] = retry
        try:
            return await waiter
        except BaseException:
            conn.close()  # cancelled or failed mid-exchange: the connection is out of step
            raise
        finally:
            timer.cancel()
            del self._busy[conn]

    def idle_connections(self) -> int:
        """How many connections wait for reuse (closed ones may still be counted)."""
        return len(self._idle)

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()

    def abandon(self, reason: str) -> int:
        """Give the endpoint up at once (it stopped answering), so requests can go elsewhere:
        those waiting for a turn or a connection fail with NotSent (ConnectFailed), those in
        progress that may be sent again (`retry`) or that never wholly reached the peer
        fail as :meth:`_Connection.abandon` says, and idle connections are reset. A request
        the peer may have received and that must not be repeated (a POST) is left to its
        answer or its timeout. Returns how many requests in progress were cut short."""
        message = f"{self.endpoint}: {reason}"
        for turn in self._turns:
            if not turn.done():
                turn.set_exception(NotSent(message))
        for limit in self._connecting:
            if not limit.expired():
                limit.reschedule(-1.0)  # the connect fails now, as if it had timed out
        cut = [
            conn
            for conn, retry in self._busy.items()
            if retry or conn.transport is None or _unacknowledged(conn.transport)
        ]
        for conn in cut:
            conn.abandon(message)
        while self._idle:
            self._idle.pop().abandon(message)
        return len(cut)
