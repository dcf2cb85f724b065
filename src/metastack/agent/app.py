"""The agent's HTTP handler: parse the proxy's headers, resolve, sign, forward, relay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from metastack import identity
from metastack.agent.forward import Forwarder, build_upstream_headers
from metastack.agent.resolve import Resolver
from metastack.agent.source import parse_origin
from metastack.errors import InvalidInput, NotFound, UpstreamUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
UNAVAILABLE = "The metadata service is temporarily unavailable."


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def make_handler(resolver: Resolver, forwarder: Forwarder, secret: str, timeout: float) -> Handler:
    """One coroutine serving every path; `timeout` bounds lookup plus forward."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        try:
            origin = parse_origin(
                headers.getall(identity.FORWARDED_FOR, []),
                headers.getall(identity.NETWORK_ID, []),
                headers.getall(identity.ROUTER_ID, []),
            )
        except InvalidInput as exc:
            return _text(400, str(exc))
        body = await request.read()
        try:
            async with asyncio.timeout(timeout):
                who = await resolver.resolve(origin)
                upstream = build_upstream_headers(origin.forwarded_for, who, secret)
                reply = await forwarder.forward(request.method, request.raw_path, body, upstream)
        except NotFound as exc:
            log.info("%s from %s: %s", request.raw_path, origin.forwarded_for, exc)
            return _text(404, str(exc))
        except (UpstreamUnavailable, TimeoutError) as exc:
            log.warning("%s from %s: 503: %r", request.raw_path, origin.forwarded_for, exc)
            return _text(503, UNAVAILABLE)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    return handle
