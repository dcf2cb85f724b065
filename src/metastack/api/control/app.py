"""The control API application: middlewares (errors, token), routes, OpenAPI, change feed."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from metastack.api.cache import sqlite_watcher
from metastack.api.control.lane import WriteLane, read_pool
from metastack.api.control.watcher import DEFAULT_POLL_INTERVAL, RevisionWatcher
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

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
TOKEN_HEADER = "X-Auth-Token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_STATUS: tuple[tuple[type[MetastackError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (StoreError, 503),
    (UpstreamUnavailable, 503),
)


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler reaches through `request.app[CONTEXT]`.

    Store calls run on the control API's own threads (`readers`, `lane`), never on the
    loop's default pool, so control traffic cannot starve the metadata API sharing the loop.
    """

    config: ApiConfig
    store: SqlStore
    watcher: RevisionWatcher
    readers: ThreadPoolExecutor
    lane: WriteLane

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) store read on the control API's read threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.readers, functools.partial(work, *args))

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        """Run a store write in the write lane, then let the change feed poller look at once."""
        try:
            return await self.lane.run(work, *args)
        finally:
            self.watcher.poke()


CONTEXT = web.AppKey("metastack_control", Context)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """`{"error": message}` with `status`."""
    return web.json_response({"error": message}, status=status, headers=headers)


_FIELD_PREFIX = re.compile(r"^[\w.]+: ")  # a model-level message that names its field


def _without_unset_branch(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Errors of `X | Unset` fields once, as if the field were plain `X`.

    pydantic reports such a field per union member: `(field, "<member tag>", ...)` and
    `(field, "none")`. The None member only stands for "left out", so drop its error and
    the member tag from the others.
    """
    unions = {e["loc"][0] for e in errors if e["loc"][1:] == ("none",)}
    kept: list[ErrorDetails] = []
    for error in errors:
        loc = error["loc"]
        if loc and loc[0] in unions:
            if loc[1:] == ("none",):
                continue
            error = {**error, "loc": (loc[0], *loc[2:])}
        kept.append(error)
    return kept


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in _without_unset_branch(exc.errors(include_url=False))[:5]:
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "json_invalid":
            problems.append(f"body: invalid JSON ({error.get('ctx', {}).get('error', message)})")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown field")
        elif error["type"] == "missing":
            problems.append(f"{loc}: field required")
        elif not loc or message.startswith(f"{loc.split('.')[0]}:"):
            names_field = _FIELD_PREFIX.match(message) is not None
            problems.append(message if loc or names_field else f"body: {message}")
        else:
            problems.append(f"{loc}: {message}")
    return "; ".join(problems)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request body validated as `model` (strict JSON); InvalidInput naming the field."""
    body = await request.read()
    context = {"max_user_data_bytes": request.app[CONTEXT].config.max_user_data_bytes}
    try:
        return model.model_validate_json(body or b"{}", context=context)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from None


def respond(payload: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response of a view (serialized in JSON mode) or of a plain dict."""
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json")


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
    config: ApiConfig, store: SqlStore, *, poll_interval: float = DEFAULT_POLL_INTERVAL
) -> web.Application:
    """The control API on `store`; the change feed polls the revision every `poll_interval`."""
    from metastack.api.control.openapi import openapi_document
    from metastack.api.control.routes import ROUTES

    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[last_resort, map_errors, require_token(config.admin_token)],
    )

    readers = read_pool()
    # On SQLite, PRAGMA data_version says in microseconds whether anyone committed since
    # the last poll: the revision is read (on a reader thread) only when someone did.
    sqlite = sqlite_watcher(config.database_url)
    known: int | None = None

    async def read_revision() -> int:
        nonlocal known
        if sqlite is not None:
            if known is not None and not sqlite.maybe_changed():
                return known
            sqlite.mark_seen()  # before the read: a commit after it shows next time
        known = await asyncio.get_running_loop().run_in_executor(readers, store.current_revision)
        return known

    watcher = RevisionWatcher(read_revision, poll_interval)
    context = Context(config, store, watcher, readers, WriteLane())
    app[CONTEXT] = context
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    document = json.dumps(openapi_document(ROUTES))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)

    async def stop_threads(app: web.Application) -> None:
        await watcher.close()
        if sqlite is not None:
            await sqlite.stop()
        context.lane.close()
        readers.shutdown(wait=False, cancel_futures=True)

    async def release_waiters(app: web.Application) -> None:
        watcher.release()

    app.on_shutdown.append(release_waiters)
    app.on_cleanup.append(stop_threads)
    return app
