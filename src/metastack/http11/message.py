"""Requests, responses and limits as plain values shared by the server and the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 hop-by-hop headers plus the framing headers a relay recomputes: never
# passed on by the proxy (guest <-> agent) nor by the agent (API -> proxy).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)

REASONS = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


@dataclass(slots=True)
class Request:
    """One complete request as the server parsed it; `target` is the raw path and query."""

    method: bytes
    target: bytes
    version: str
    headers: Headers
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class Response:
    """What a handler answers; the server adds Content-Length and Connection itself."""

    status: int
    reason: bytes
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    close: bool = False
    # Hook for hop-limited replies (session tokens): IP TTL / hop limit of this reply only.
    ip_ttl: int | None = None


class Handler(Protocol):
    """Answers one request; `peer` is the client's IP address ("" on unix sockets)."""

    async def __call__(self, request: Request, peer: str) -> Response: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-side bounds on one request, and how long a connection may take or idle."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 1 << 20
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    # A request target longer than this is refused with 400 (None: only the head limit).
    max_target_bytes: int | None = None
    # How a body over max_body_bytes is refused (nova's metadata API says 400).
    body_too_large: tuple[int, str] = (413, "request body too large")


def reason(status: int) -> bytes:
    """The standard reason phrase of a status code (a generic one if unknown)."""
    return REASONS.get(status, b"Unknown")


def error_response(status: int, message: str, *, close: bool = False) -> Response:
    """A short text/plain response."""
    return Response(
        status,
        REASONS.get(status, b"Error"),
        [(b"Content-Type", b"text/plain; charset=utf-8")],
        message.encode() + b"\n",
        close,
    )
