"""HTTP/1.1 client for the agent's unix socket: pooled keep-alive connections, httptools."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import cast

import httptools

from metastack.errors import UpstreamUnavailable
from metastack.proxy.headers import Headers


class UpstreamTimeout(UpstreamUnavailable):
    """The agent accepted the request but did not answer in time (-> 504)."""


class UpstreamBroken(UpstreamUnavailable):
    """The agent closed the connection or sent a malformed response (-> 502)."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: bytes
    headers: Headers
    body: bytes
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One unix-socket connection to the agent carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.parser: httptools.HttpResponseParser | None = None
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

    def send(self, data: bytes, is_head: bool) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        # A fresh parser per response: llhttp cannot be told that a HEAD reply has no body.
        self.parser = httptools.HttpResponseParser(self)
        self.got_data = self.headers_done = self.framed = False
        self.is_head = is_head
        self.reason = b""
        self.headers = []
        self.body = []
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        if self.parser is None or self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"malformed response from agent: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and not self.framed:
                self._finish(keep_alive=False)  # a body delimited by the connection's end
            else:
                self._fail(ConnectionResetError("agent closed the connection"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def timeout(self) -> None:
        self._fail(UpstreamTimeout("agent did not answer in time"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def _finish(self, keep_alive: bool) -> None:
        assert self.parser is not None and self.waiter is not None
        if not self.waiter.done():
            status = self.parser.get_status_code()
            response = UpstreamResponse(
                status, self.reason, self.headers, b"".join(self.body), keep_alive
            )
            self.waiter.set_result(response)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        assert self.parser is not None
        if self.is_head:
            self._finish(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self._finish(self.parser.should_keep_alive())


class AgentClient:
    """Sends requests to the agent over its unix socket, reusing idle connections."""

    def __init__(self, path: str, *, connect_timeout: float, pool_size: int) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self._idle: collections.deque[_Connection] = collections.deque()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_unix_connection(_Connection, self.path)
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"agent socket {self.path}: {exc}") from exc
        return conn

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return await self._connect()

    async def request(
        self, data: bytes, *, is_head: bool, timeout: float, retry: bool
    ) -> UpstreamResponse:
        """Send one serialised request; the reply is read whole.

        `retry` allows one more attempt on a fresh connection when a pooled one turns out
        to have been closed by the agent before it answered (safe for idempotent methods).
        """
        conn = await self._acquire()
        try:
            response = await self._exchange(conn, data, is_head, timeout)
        except ConnectionError as exc:
            if not (retry and conn.reused and not conn.got_data):
                raise UpstreamBroken(f"agent connection failed: {exc}") from exc
            conn = await self._connect()
            try:
                response = await self._exchange(conn, data, is_head, timeout)
            except ConnectionError as exc2:
                raise UpstreamBroken(f"agent connection failed: {exc2}") from exc2
        if response.keep_alive and not conn.closed and len(self._idle) < self.pool_size:
            conn.reused = True
            conn.waiter = None
            self._idle.append(conn)
        else:
            conn.close()
        return response

    async def _exchange(
        self, conn: _Connection, data: bytes, is_head: bool, timeout: float
    ) -> UpstreamResponse:
        waiter = conn.send(data, is_head)
        timer = asyncio.get_running_loop().call_later(timeout, conn.timeout)
        try:
            return await waiter
        except BaseException:
            conn.close()  # cancelled or failed mid-exchange: the connection is out of step
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
