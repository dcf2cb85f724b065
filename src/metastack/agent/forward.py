"""The signed request to the metadata API (spec B.4): headers, TLS, endpoints with failover."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from metastack import identity
from metastack.agent.cache import Identity
from metastack.agent.config import AgentConfig
from metastack.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

# Not relayed to the proxy: connection-level headers, and the length the server recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# aiohttp would add these on its own; the API must see none of the guest's headers, and
# Accept-Encoding is set explicitly to identity so bodies pass through byte for byte.
SKIP_AUTO_HEADERS = ("Content-Type",)


def build_upstream_headers(forwarded_for: str, who: Identity, secret: str) -> dict[str, str]:
    """Exactly the contract's four headers, plus identity encoding."""
    return {
        identity.FORWARDED_FOR: forwarded_for,
        identity.INSTANCE_ID: who.instance_id,
        identity.TENANT_ID: who.project_id,
        identity.INSTANCE_ID_SIGNATURE: identity.sign_instance_id(secret, who.instance_id),
        "Accept-Encoding": "identity",
    }


def relayed_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The API's response headers minus hop-by-hop ones."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


def make_ssl_context(config: AgentConfig) -> ssl.SSLContext:
    """TLS to the API as upstream: insecure, or a CA file / system CAs; client cert if both set."""
    context = ssl.create_default_context(cafile=config.auth_ca_cert or None)
    if config.nova_metadata_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.nova_client_cert and config.nova_client_priv_key:
        context.load_cert_chain(config.nova_client_cert, config.nova_client_priv_key)
    return context


@dataclass(frozen=True, slots=True)
class Reply:
    """The API's answer, relayed to the proxy unchanged."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def may_fail_over(method: str, exc: BaseException) -> bool:
    """True when the next endpoint may take the request: it never reached this one, or
    it was dropped unanswered and replaying it changes nothing."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return True
    return isinstance(exc, aiohttp.ServerDisconnectedError) and method in IDEMPOTENT


class Forwarder:
    """Sends one request to the first metadata API endpoint that accepts a connection."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Sequence[str],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one metadata API endpoint is required")
        self._session = session
        # Per request, so TLS settings for the metadata API never apply to the control API.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._endpoints = [URL(endpoint) for endpoint in endpoints]
        # Start where the last request succeeded, so a dead endpoint costs one failure, not one
        # per request.
        self._preferred = 0

    async def forward(
        self, method: str, path_qs: str, body: bytes, headers: Mapping[str, str]
    ) -> Reply:
        """Relay a request; UpstreamUnavailable when no endpoint could be reached."""
        count = len(self._endpoints)
        last_error: BaseException | None = None
        for attempt in range(count):
            index = (self._preferred + attempt) % count
            url = URL(str(self._endpoints[index]) + path_qs, encoded=True)
            try:
                reply = await self._send(method, url, body, headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if not may_fail_over(method, exc):
                    raise UpstreamUnavailable(f"metadata API {url.origin()}: {exc!r}") from exc
                log.warning("metadata API %s unreachable: %s", self._endpoints[index], exc)
                last_error = exc
                continue
            self._preferred = index
            return reply
        raise UpstreamUnavailable(f"no metadata API endpoint reachable: {last_error!r}")

    async def _send(self, method: str, url: URL, body: bytes, headers: Mapping[str, str]) -> Reply:
        async with self._session.request(
            method,
            url,
            data=body or None,
            headers=headers,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            allow_redirects=False,
            ssl=self._ssl,
        ) as response:
            payload = await response.read()
            return Reply(response.status, relayed_headers(response.headers), payload)
