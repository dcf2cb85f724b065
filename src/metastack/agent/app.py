"""The agent's HTTP handler: parse the proxy's headers, resolve, sign, forward, relay."""

from __future__ import annotations

import logging
import time

from metastack import identity
from metastack.agent.cache import Identity
from metastack.agent.forward import Forwarder, Signer
from metastack.agent.resolve import Resolver
from metastack.agent.source import Origin, parse_origin
from metastack.errors import InvalidInput, NotFound, UpstreamUnavailable
from metastack.http11 import REASONS, Request, Response
from metastack.logs import AccessLog
from metastack.metrics import AgentMetrics

log = logging.getLogger(__name__)

# neutron's agent's words for an API it cannot reach
UNAVAILABLE = "The remote metadata server is temporarily unavailable. Please try again later."
_TEXT = [(b"Content-Type", b"text/plain; charset=UTF-8")]
# Which list of `proxy_headers`' answer a lower-cased header name goes to.
_XFF, _NETWORK, _ROUTER, _OVN_NETWORK = 0, 1, 2, 3
_WANTED = {
    identity.FORWARDED_FOR.lower().encode(): _XFF,
    identity.NETWORK_ID.lower().encode(): _NETWORK,
    identity.ROUTER_ID.lower().encode(): _ROUTER,
    identity.OVN_NETWORK_ID.lower().encode(): _OVN_NETWORK,
}


_MISMATCH = identity.ADDRESS_MISMATCH.lower().encode()


def _stale(response: Response) -> bool:
    """The API says the signed instance does not hold the forwarded address."""
    return any(name.lower() == _MISMATCH for name, _ in response.headers)


def _text(status: int, message: str) -> Response:
    """The agent's own answer, byte for byte as neutron's agent writes it (its HTML page,
    labelled text/plain), so a guest reads the same through either agent."""
    title = f"{status} {REASONS[status].decode()}"
    page = (
        f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n"
        f"  {message}<br /><br />\n\n\n </body>\n</html>"
    )
    return Response(status, REASONS[status], list(_TEXT), page.encode("utf-8", "surrogateescape"))


def proxy_headers(request: Request) -> tuple[list[str], list[str], list[str], list[str]]:
    """Every value of X-Forwarded-For, X-Neutron-Network-ID, X-Neutron-Router-ID and
    X-OVN-Network-ID, in the order of :func:`parse_origin`'s arguments."""
    found: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    for name, value in request.headers:
        slot = _WANTED.get(name.lower())
        if slot is not None:
            found[slot].append(value.decode("utf-8", "surrogateescape"))
    return found


class _Seen:
    """What a request turned out to be, for its access log line."""

    __slots__ = ("origin", "who")

    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.who: Identity | None = None


class AgentHandler:
    """Serves every path; `timeout` bounds lookup plus forward (then 503)."""

    def __init__(
        self,
        resolver: Resolver,
        forwarder: Forwarder,
        secret: str,
        timeout: float,
        *,
        metrics: AgentMetrics | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.resolver = resolver
        self.forwarder = forwarder
        self.signer = Signer(secret)
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.access_log = access_log if access_log is not None else AccessLog(False)

    async def __call__(self, request: Request, peer: str) -> Response:
        """Answer one proxied request; count it and log it (the one place for both)."""
        started = time.perf_counter()
        seen = _Seen()
        response = await self._answer(request, seen)
        self.metrics.requests.inc(response.status)
        if self.access_log.enabled:
            origin, who = seen.origin, seen.who
            self.access_log.write(
                {
                    "instance_id": who.instance_id if who else None,
                    "project_id": who.project_id if who else None,
                    "network_id": origin.network_id if origin else None,
                    "router_id": origin.router_id if origin else None,
                    "remote_addr": origin.forwarded_for if origin else (peer or None),
                    "method": request.method.decode("latin-1"),
                    "path": request.target[:2048].decode("utf-8", "backslashreplace"),
                    "status": response.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        return response

    async def _answer(self, request: Request, seen: _Seen) -> Response:
        try:
            origin = seen.origin = parse_origin(*proxy_headers(request))
        except InvalidInput as exc:
            return _text(400, str(exc))
        # One deadline for the whole request, checked by the client's own timers: no task
        # or timeout context per request.
        deadline = self.forwarder.loop.time() + self.timeout
        try:
            who = seen.who = await self.resolver.resolve(origin, deadline)
            head = self.signer.header_block(origin.forwarded_for, who)
            response = await self.forwarder.forward(
                request.method, request.target, request.body, head, deadline
            )
            if response.status == 404 and _stale(response):
                # The port behind our (cached) answer was deleted or moved before the
                # change feed told us: look the address up again, past the cache, once.
                log.info("%s no longer holds %s; looking it up again", who, origin.forwarded_for)
                who = seen.who = await self.resolver.resolve(origin, deadline, fresh=True)
                head = self.signer.header_block(origin.forwarded_for, who)
                response = await self.forwarder.forward(
                    request.method, request.target, request.body, head, deadline
                )
            return response
        except NotFound as exc:
            log.info("%r from %s: %s", request.target, origin.forwarded_for, exc)
            return _text(404, str(exc))
        except UpstreamUnavailable as exc:
            log.warning("%r from %s: 503: %r", request.target, origin.forwarded_for, exc)
            return _text(503, UNAVAILABLE)
