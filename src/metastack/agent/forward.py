"""The signed request to the metadata API: headers, TLS, endpoints with failover.

The contract: docs/wire-contracts.md#request-to-the-metadata-api.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Sequence

from metastack import identity
from metastack.agent.cache import Identity
from metastack.agent.config import AgentConfig
from metastack.errors import UpstreamUnavailable
from metastack.http11 import (
    HOP_BY_HOP,
    REASONS,
    ConnectFailed,
    Endpoint,
    Headers,
    NotSent,
    Pool,
    Response,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
)
from metastack.upstreams import Member, close_http_upstreams, http_upstreams

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
# Idle keep-alive connections kept per metadata API endpoint.
POOL_SIZE = 512

_XFF = identity.FORWARDED_FOR.encode()
_INSTANCE = identity.INSTANCE_ID.encode()
_TENANT = identity.TENANT_ID.encode()
_SIGNATURE = identity.INSTANCE_ID_SIGNATURE.encode()


def _header_value(value: str) -> bytes:
    # Ids come from the control API and the address from the proxy; a line break in
    # either would let it write headers of its own.
    data = value.encode("utf-8", "surrogateescape")
    if b"\r" in data or b"\n" in data:
        raise UpstreamUnavailable("refusing a header value with a line break")
    return data


def build_upstream_headers(forwarded_for: str, who: Identity, secret: str) -> Headers:
    """Exactly the contract's four headers, plus identity encoding (bodies pass byte for
    byte) and `Accept: */*`, which neutron's agent sends too (python-requests' default): the
    API picks its error pages' form by it, so guests get the same pages through either."""
    return [(_XFF, _header_value(forwarded_for)), *_identity_headers(who, secret)]


def _identity_headers(who: Identity, secret: str) -> Headers:
    return [
        (_INSTANCE, _header_value(who.instance_id)),
        (_TENANT, _header_value(who.project_id)),
        (_SIGNATURE, identity.sign_instance_id(secret, who.instance_id).encode()),
        (b"Accept-Encoding", b"identity"),
        (b"Accept", b"*/*"),
    ]


def _encode(headers: Headers) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


class Signer:
    """The headers of :func:`build_upstream_headers`, encoded; the part that depends only on
    the identity is signed once and kept (a guest asks dozens of times per boot)."""

    MAX_KEPT = 4096

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._blocks: dict[Identity, bytes] = {}

    def header_block(self, forwarded_for: str, who: Identity) -> bytes:
        """Header lines for the API request, each ending in CRLF (Host not included)."""
        block = self._blocks.get(who)
        if block is None:
            if len(self._blocks) >= self.MAX_KEPT:
                self._blocks.clear()  # rare; dropping all is simpler than an LRU here
            block = self._blocks[who] = _encode(_identity_headers(who, self._secret))
        return b"%s: %s\r\n%s" % (_XFF, _header_value(forwarded_for), block)


def relayed_headers(
    headers: Iterable[tuple[bytes, bytes]], *, keep_length: bool = False
) -> Headers:
    """The API's response headers minus hop-by-hop ones (Content-Length too, unless a HEAD
    reply's length must reach the guest as the API stated it)."""
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP or (keep_length and name.lower() == b"content-length")
    ]


def make_ssl_context(config: AgentConfig) -> ssl.SSLContext:
    """TLS to the API as upstream: insecure, or a CA file / system CAs; client cert if both set."""
    context = ssl.create_default_context(cafile=config.auth_ca_cert or None)
    if config.nova_metadata_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.nova_client_cert and config.nova_client_priv_key:
        context.load_cert_chain(config.nova_client_cert, config.nova_client_priv_key)
    return context


def may_fail_over(method: bytes, exc: BaseException) -> bool:
    """True when another endpoint may take the request: it never reached this one, or it
    was cut off unanswered and replaying it changes nothing."""
    if isinstance(exc, NotSent):
        return True
    return isinstance(exc, UpstreamBroken) and method in IDEMPOTENT


class Forwarder:
    """Spreads requests over the metadata API endpoints (fewest outstanding among those up,
    ties in turn), each with its own pool and `concurrency` limit, and sends a request to
    another endpoint when :func:`may_fail_over` allows it. Endpoints are probed once
    :meth:`start`ed (see :mod:`metastack.upstreams`)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        ssl_context: ssl.SSLContext | None = None,
        *,
        loop: asyncio.AbstractEventLoop,
        connect_timeout: float = 3.0,
        concurrency: int = 0,
    ) -> None:
        def make_pool(endpoint: Endpoint) -> Pool:
            return Pool(
                endpoint,
                connect_timeout=connect_timeout,
                pool_size=POOL_SIZE,
                ssl_context=ssl_context,
                concurrency=concurrency,
            )

        self.upstreams = http_upstreams(
            endpoints, make_pool, what="metadata API", ssl_context=ssl_context
        )
        self.loop = loop  # the serving loop (3.11's get_running_loop() makes a getpid() call)

    def start(self) -> None:
        """Start probing the endpoints (with two or more)."""
        self.upstreams.start()

    async def forward(
        self, method: bytes, target: bytes, body: bytes, header_block: bytes, deadline: float
    ) -> Response:
        """Relay a request before `deadline` (loop time) and return the API's answer ready
        for the proxy; UpstreamUnavailable when no endpoint answered. `header_block` is
        what :meth:`Signer.header_block` made."""
        upstreams = self.upstreams
        retry = method in IDEMPOTENT
        is_head = method == b"HEAD"
        tried: list[Member[Pool]] = []
        last_error: BaseException | None = None
        while (member := upstreams.pick(tried)) is not None:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise UpstreamTimeout(f"metadata API: no answer in time ({last_error!r})")
            pool = member.target
            endpoint = pool.endpoint
            head = b"Host: %s\r\n%s" % (endpoint.host, header_block)
            data = encode_request(method, endpoint.base_path + target, head, body)
            member.outstanding += 1
            try:
                response = await pool.request(data, timeout=remaining, retry=retry, is_head=is_head)
            except UpstreamUnavailable as exc:
                if not may_fail_over(method, exc):
                    raise
                if isinstance(exc, ConnectFailed):
                    upstreams.refused(member, exc)
                log.warning("metadata API %s: %r; trying another", endpoint, exc)
                last_error = exc
                tried.append(member)
                continue
            finally:
                member.outstanding -= 1
            return Response(
                response.status,
                response.reason or REASONS.get(response.status, b"Unknown"),
                relayed_headers(response.headers, keep_length=is_head),
                response.body,
            )
        raise UpstreamUnavailable(f"no metadata API endpoint reachable: {last_error!r}")

    async def close(self) -> None:
        """Stop probing; close the connections of every endpoint."""
        await close_http_upstreams(self.upstreams)
