"""The control API application: middlewares (errors, token), routes, OpenAPI, change feed."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from metastack.api.control.agents import monitor_agents
from metastack.api.control.context import CONTEXT, Context, Handler, error_response
from metastack.api.control.lane import WriteLane, read_pool
from metastack.api.control.openapi import openapi_document
from metastack.api.control.routes import ROUTES
from metastack.config import ApiConfig
from metastack.errors import (
    Conflict,
    InvalidInput,
    MetastackError,
    NotFound,
    StoreError,
    UpstreamUnavailable,
)
from metastack.store.sql import SqlStore
from metastack.store.watch import DEFAULT_POLL_INTERVAL, RevisionWatcher
from metastack.store.watchers import watcher_for
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
TOKEN_HEADER = "X-Auth-Token"

_STATUS: tuple[tuple[type[MetastackError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (StoreError, 503),
    (UpstreamUnavailable, 503),
)


@web.middleware
async def last_resort(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only place that catches Exception: log it once, answer 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("control API: %s %s failed", request.method, request.path)
        return error_response(500, "internal error")


@web.middleware
async def map_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Our exceptions and aiohttp's HTTP errors as `{"error": ...}` with their status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        if exc.status == 413:
            return error_response(413, f"body: larger than {MAX_BODY_BYTES} bytes")
        return error_response(exc.status, exc.reason, headers)
    except MetastackError as exc:
        for error_type, status in _STATUS:
            if isinstance(exc, error_type):
                if status == 503:
                    log.warning("control API: %s", exc)
                return error_response(status, str(exc))
        raise


def require_token(token: str | None) -> Any:
    """A middleware that refuses (401) requests without `X-Auth-Token: token`, when set."""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token:
            given = request.headers.get(TOKEN_HEADER)
            if given is None:
                return error_response(401, f"{TOKEN_HEADER} header required")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error_response(401, f"{TOKEN_HEADER} is not valid")
        return await handler(request)

    return check_token


def make_control_app(
    config: ApiConfig,
    store: SqlStore,
    *,
    watcher: RevisionWatcher | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> web.Application:
    """The control API on `store`. Its change feed waits on `watcher` (the worker's, which
    its owner starts and closes), or on one of its own that polls every `poll_interval`
    when no push arrives."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[last_resort, map_errors, require_token(config.admin_token)],
    )

    readers = read_pool()
    own_watcher = watcher is None
    watcher = watcher or watcher_for(store, poll_interval)
    context = Context(config, store, watcher, readers, WriteLane())
    app[CONTEXT] = context
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    document = json.dumps(openapi_document(ROUTES))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)

    monitor: list[asyncio.Task[None]] = []

    async def start_monitor(app: web.Application) -> None:
        monitor.append(asyncio.get_running_loop().create_task(monitor_agents(context)))

    async def start_watcher(app: web.Application) -> None:
        await watcher.start()

    async def stop_threads(app: web.Application) -> None:
        await cancel_and_wait(*monitor)
        if own_watcher:
            await watcher.close()
        context.lane.close()
        readers.shutdown(wait=False, cancel_futures=True)

    async def release_waiters(app: web.Application) -> None:
        watcher.release()

    if own_watcher:
        app.on_startup.append(start_watcher)
    app.on_startup.append(start_monitor)
    app.on_shutdown.append(release_waiters)
    app.on_cleanup.append(stop_threads)
    return app
