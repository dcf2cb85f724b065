"""The change feed: GET /v1/changes?since=N&wait=S&limit=L, long-polling on the watcher."""

from __future__ import annotations

import asyncio

from aiohttp import web

from metastack.api.control.context import CONTEXT, respond
from metastack.api.control.table import Param, Query, check_query
from metastack.errors import ChangesPruned, InvalidInput
from metastack.store import views

MAX_WAIT_SECONDS = 60.0
MAX_LIMIT = 10000
MAX_REVISION = 2**62


def _number(query: Query, name: str, default: float, low: float, high: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}: must be a number") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low:g} and {high:g}")
    return value


def _integer(query: Query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise InvalidInput(f"{name}: must be a non-negative integer")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}")
    return value


FEED_PARAMS = (
    Param(
        "since",
        "changes after this revision (default 0)",
        schema={"type": "integer", "minimum": 0, "maximum": MAX_REVISION},
    ),
    Param(
        "wait",
        "seconds to wait for a change when there is none yet (0-60)",
        schema={"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
    ),
    Param(
        "limit",
        "at most this many changes (default 1000)",
        schema={"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    ),
)


async def changes(request: web.Request) -> web.StreamResponse:
    """GET /v1/changes?since=N&wait=S&limit=L: the current revision and changes after N."""
    context = request.app[CONTEXT]
    query = check_query(request, FEED_PARAMS)
    since = _integer(query, "since", 0, 0, MAX_REVISION)
    wait = _number(query, "wait", 0.0, 0.0, MAX_WAIT_SECONDS)
    limit = _integer(query, "limit", 1000, 1, MAX_LIMIT)
    try:
        revision, found = await context.call(context.store.changes_page, since, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not found and revision == since and loop.time() < deadline:
            if not await context.watcher.wait_beyond(since, deadline - loop.time()):
                break
            revision, found = await context.call(context.store.changes_page, since, limit)
            if not found and revision == since:
                await asyncio.sleep(0.05)  # the watcher's view was ahead of ours; don't spin
    except ChangesPruned as exc:
        return pruned(exc)
    return respond(
        views.ChangesView(
            revision=revision,
            changes=[
                views.ChangeView.model_validate(change, from_attributes=True) for change in found
            ],
        )
    )


def pruned(exc: ChangesPruned) -> web.Response:
    """410: the follower must read everything again and follow from `revision`."""
    body = {
        "error": str(exc),
        "oldest_revision": exc.oldest_revision,
        "revision": exc.revision,
    }
    return respond(body, 410)
