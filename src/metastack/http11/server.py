"""Server side of HTTP/1.1 on asyncio and httptools: whole requests in, one write out."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from typing import cast

import httptools

from metastack.http11.message import Handler, Headers, Limits, Request, Response, error_response

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake
_MAX_PIPELINED = 16
_CONTENT_LENGTH = b"content-length"
_EXPECT = b"expect"
_VERSIONS = frozenset({"1.0", "1.1"})


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _set_hop_limit(sock: socket.socket, hops: int | None) -> None:
    """Set the TTL / hop limit of what `sock` sends next; None restores the default (-1)."""
    value = -1 if hops is None else hops
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, value)
    # Also for dual-stack IPv6 sockets: their IPv4-mapped peers are governed by IP_TTL.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, value)


def encode_response(response: Response, request: Request | None, keep_alive: bool) -> bytes:
    """Status line, headers (with Content-Length and Connection as needed) and body."""
    # One buffer, written once: Nagle and delayed ACKs never add 40 ms to keep-alive clients.
    status = response.status
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, response.reason)]
    has_length = False
    for name, value in response.headers:
        parts.append(b"%s: %s\r\n" % (name, value))
        if len(name) == 14 and name.lower() == _CONTENT_LENGTH:
            has_length = True
    bodyless = status < 200 or status == 204 or status == 304
    is_head = request is not None and request.method == b"HEAD"
    if not bodyless and not (is_head and has_length):
        parts.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif request is not None and request.version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not bodyless and not is_head:
        parts.append(response.body)
    return b"".join(parts)


class _ClosedParser:
    """Stands in for the request parser once the connection is gone."""

    def feed_data(self, data: bytes) -> None:
        return None


_CLOSED_PARSER = cast(httptools.HttpRequestParser, _ClosedParser())


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse, dispatch in order, respond, keep alive."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        connections: set[HttpProtocol] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.connections = connections
        # Servers pass their loop: Python 3.11's get_running_loop() makes a getpid()
        # system call each time, and a connection per request is the proxy's common case.
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        # One timer per connection, re-armed lazily: a request only moves `deadline`.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.deadline: float | None = None
        self.in_message = False
        self.closing = False
        # The client half-closed (shut its sending side down): answer, then close.
        self.eof = False
        # ... in the middle of a request, which is refused once the earlier ones are answered.
        self.truncated = False
        self.write_paused = False
        self.read_paused = False
        self._reset_message()

    def _reset_message(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        # TCP_NODELAY: both uvloop's and asyncio's TCP transports set it themselves.
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            self.peer = str(peername[0])
        if self.connections is not None:
            self.connections.add(self)
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
        if self.connections is not None:
            self.connections.discard(self)
        # The parser and the transport both point back here: without these cycles a
        # closed connection is freed at once instead of by the garbage collector (one
        # connection per guest request on the proxy's listeners).
        self.parser = _CLOSED_PARSER
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._abort(cause.status, str(cause))
            else:
                log.exception("request parser callback failed")
                self._abort(500, "internal error")
        except httptools.HttpParserUpgrade:
            # The request itself was complete and is answered normally; what follows it
            # would be another protocol, so the connection ends after the reply.
            self._abort(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._abort(400, f"malformed request: {exc}")

    def eof_received(self) -> bool:
        """The client sent its last byte (a half-close, as `nc` and `printf | nc` do).

        HTTP/1.1 allows it: every complete request is still answered, in order, and the
        connection closes after the last answer. A request cut short by the end is
        refused (400) after them, as haproxy does; with nothing owed, close at once.
        Returning True keeps the transport open for writing."""
        self.eof = True
        if self.closing:
            # Already ending (a refused request, a shutdown): a reply in flight still goes.
            return self.task is not None
        if self.in_message:
            self.in_message = False
            self.deadline = None
            self.truncated = True
        if self.task is None and not self.queue:
            self._end_of_input()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._next()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True
        self._reset_message()
        self._arm(self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        longest = self.limits.max_target_bytes
        if longest is not None and len(self.url) > longest:
            raise _Reject(400, "request target too long")
        if self.head_bytes > self.limits.max_header_bytes:
            raise _Reject(431, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_header_bytes:
            raise _Reject(431, "request head too large")
        if len(headers) > self.limits.max_headers:
            raise _Reject(431, "too many header fields")

    def on_headers_complete(self) -> None:
        if self.parser.get_method() == b"CONNECT":
            raise _Reject(405, "CONNECT is not supported")
        version = self.parser.get_http_version()
        if version not in _VERSIONS:
            # llhttp takes a request line without a version as HTTP/0.9, and HTTP/2.0 as
            # text; neither is a request this server can answer in kind.
            raise _Reject(400, f"HTTP/{version} is not supported")
        expect = False
        for name, value in self.headers:
            size = len(name)
            if size == 14 and name.lower() == _CONTENT_LENGTH:
                if not value.strip().isdigit():
                    raise _Reject(400, "invalid Content-Length")
                if int(value) > self.limits.max_body_bytes:
                    raise _Reject(*self.limits.body_too_large)
            elif size == 6 and name.lower() == _EXPECT and value.lower() == b"100-continue":
                expect = True
        if expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            raise _Reject(*self.limits.body_too_large)
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.deadline = None
        parser = self.parser
        request = Request(
            parser.get_method(),
            self.url,
            parser.get_http_version(),
            self.headers,
            b"".join(self.body) if self.body else b"",
            parser.should_keep_alive(),
        )
        self._reset_message()
        self.queue.append(request)
        if len(self.queue) >= _MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True
        self._next()

    # -- dispatch ----------------------------------------------------------------------
    def _next(self) -> None:
        if self.task is None and self.queue and not self.write_paused and not self.closing:
            self.task = self.loop.create_task(self._dispatch(self.queue.popleft()))

    async def _dispatch(self, request: Request) -> None:
        try:
            response = await self.handler(request, self.peer)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("handler failed for %s %r", request.method.decode(), request.target)
            response = error_response(500, "internal error", close=True)
        self.task = None
        self.write(response, request)
        if self.transport is not None and not self.closing:
            if self.read_paused and len(self.queue) < _MAX_PIPELINED:
                self.read_paused = False
                self.transport.resume_reading()
            if self.queue:
                self._next()
            elif self.eof:
                self._end_of_input()
            elif not self.in_message:
                self._arm(self.limits.keepalive_timeout)

    def write(self, response: Response, request: Request | None) -> None:
        """Send one complete response; close afterwards unless the connection stays alive."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = (
            request is not None
            and request.keep_alive
            and not response.close
            and not self.closing
            # After a half-close, the answer to the last request is the last thing sent.
            and not (self.eof and not self.queue and not self.truncated)
        )
        data = encode_response(response, request, keep_alive)
        if response.ip_ttl is None:
            transport.write(data)
        else:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                _set_hop_limit(sock, response.ip_ttl)
            transport.write(data)
            if sock is not None:
                # The reply was handed to the kernel by write() (or is buffered and will go
                # out with whatever TTL is current then); later replies use the default.
                _set_hop_limit(sock, None)
        if not keep_alive:
            self.closing = True
            self.deadline = None
            transport.close()

    def _end_of_input(self) -> None:
        """Every complete request is answered and the client sends no more: close, after
        refusing the request it left unfinished, if any."""
        if self.truncated:
            self.write(error_response(400, "incomplete request", close=True), None)
        elif self.transport is not None:
            self.closing = True
            self.deadline = None
            self.transport.close()

    def _abort(self, status: int, message: str) -> None:
        """Reject the request being read and close once earlier responses are out."""
        self.closing = True
        self.queue.clear()
        if self.task is None:
            # Nothing in flight: answer now. Otherwise the in-flight reply goes first and
            # the connection closes after it.
            self.write(error_response(status, message, close=True), None)
        self.deadline = None

    # -- timers ------------------------------------------------------------------------
    def _arm(self, delay: float) -> None:
        at = self.loop.time() + delay
        self.deadline = at
        if self.timer is not None:
            if self.timer_at <= at:
                return  # fires first and re-arms itself for the new deadline
            self.timer.cancel()
        self.timer = self.loop.call_at(at, self._on_timer)
        self.timer_at = at

    def _on_timer(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        self.deadline = None
        if self.task is not None or self.transport is None:
            return
        if self.in_message:
            self._abort(408, "request not received in time")
        else:
            self.closing = True
            self.transport.close()

    def close_if_idle(self) -> bool:
        """Close now if no request is being read or handled; else close after the reply."""
        if self.task is None and not self.in_message and self.transport is not None:
            self.transport.close()
            return True
        self.closing = True
        return False


class HttpServer:
    """An asyncio server of :class:`HttpProtocol` connections on one listening socket."""

    def __init__(self, server: asyncio.AbstractServer, connections: set[HttpProtocol]) -> None:
        self.server = server
        self.connections = connections

    @classmethod
    async def start(
        cls,
        handler: Handler,
        limits: Limits,
        sock: socket.socket,
        backlog: int = 100,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> HttpServer:
        """Serve an already bound socket (TCP or unix; TCP with TLS given `ssl_context`);
        `backlog` is passed to listen()."""
        connections: set[HttpProtocol] = set()
        loop = asyncio.get_running_loop()

        def factory() -> HttpProtocol:
            return HttpProtocol(handler, limits, connections, loop)

        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(factory, sock=sock, backlog=backlog)
        else:
            server = await loop.create_server(
                factory,
                sock=sock,
                backlog=backlog,
                ssl=ssl_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if ssl_context else None,
            )
        return cls(server, connections)

    def stop_listening(self) -> list[HttpProtocol]:
        """Accept no more; close idle connections; returns the busy ones (they close after
        their reply)."""
        self.server.close()
        return [conn for conn in list(self.connections) if not conn.close_if_idle()]

    async def close(self, grace: float) -> None:
        """Stop listening, give in-flight replies up to `grace` seconds, then drop the rest."""
        await drain(self.stop_listening(), grace)


async def drain(busy: list[HttpProtocol], grace: float) -> None:
    """Wait up to `grace` seconds for busy connections to finish, then abort them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(c.transport is not None and not c.transport.is_closing() for c in busy):
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.05)
    for conn in busy:
        if conn.transport is not None:
            conn.transport.abort()
