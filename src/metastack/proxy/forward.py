"""The proxy's request handler: rewrite the guest's request, send it to the agent, relay."""

from __future__ import annotations

from metastack.errors import UpstreamUnavailable
from metastack.http11 import (
    REASONS,
    Request,
    Response,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
    error_response,
)
from metastack.metrics import ProxyMetrics
from metastack.proxy.headers import IdentityKind, downstream_headers, upstream_headers
from metastack.proxy.upstream import AgentClient

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
DEFAULT_HOST = b"169.254.169.254"


def serialize_request(request: Request, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The HTTP/1.1 request sent to the agent: head and body in one buffer."""
    if not any(name.lower() == b"host" for name, _ in headers):
        headers = [*headers, (b"Host", DEFAULT_HOST)]
    return encode_request(request.method, request.target, headers, request.body)


class Forwarder:
    """Forwards requests of any listener to the agent; one per process.

    Every request waits its turn in the client's first-come-first-served queue and gets
    `upstream_timeout`, whatever its method, path or query string: nothing a guest writes
    buys a longer wait or a place ahead of other guests. (Change notification, when it
    comes, is to wait longer only within bounds per source here and per instance at the
    agent.)
    """

    def __init__(
        self,
        client: AgentClient,
        *,
        upstream_timeout: float,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.client = client
        self.upstream_timeout = upstream_timeout
        self.metrics = metrics if metrics is not None else ProxyMetrics()

    async def forward(
        self, request: Request, peer: str, kind: IdentityKind, ident: str
    ) -> Response:
        """Send the guest's request, stamped with its identity, and relay the answer."""
        headers = upstream_headers(request.headers, peer, kind, ident)
        data = serialize_request(request, headers)
        is_head = request.method == b"HEAD"
        try:
            up = await self.client.request(
                data,
                is_head=is_head,
                timeout=self.upstream_timeout,
                retry=request.method in IDEMPOTENT,
            )
        except UpstreamTimeout:
            return error_response(504, "metadata agent timed out")
        except UpstreamBroken:
            return error_response(502, "metadata agent sent no valid response")
        except UpstreamUnavailable:
            return error_response(503, "metadata agent unavailable")
        out = downstream_headers(up.headers)
        if is_head:
            # No body to count: the agent's length is the one the guest must see.
            out += [(n, v) for n, v in up.headers if n.lower() == b"content-length"]
        return Response(up.status, up.reason or REASONS.get(up.status, b""), out, up.body)


class ListenerHandler:
    """The handler of one listener: the forwarder plus that listener's identity."""

    __slots__ = ("forwarder", "ident", "kind")

    def __init__(self, forwarder: Forwarder, kind: IdentityKind, ident: str) -> None:
        self.forwarder = forwarder
        self.kind: IdentityKind = kind
        self.ident = ident

    async def __call__(self, request: Request, peer: str) -> Response:
        forwarder = self.forwarder
        response = await forwarder.forward(request, peer, self.kind, self.ident)
        forwarder.metrics.requests.inc(response.status)
        return response
