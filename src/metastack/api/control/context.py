"""What every control API handler shares: the app's Context, body parsing, JSON answers.

The bottom of the control API's import tree: handlers (`routes`, `feed`), the route table
(`table`) and the application (`app`) import this module, and it imports none of them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from metastack.api.control.lane import WriteLane
from metastack.config import ApiConfig
from metastack.errors import InvalidInput
from metastack.store.sql import SqlStore
from metastack.store.watch import RevisionWatcher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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
        """Run a store write in the write lane, then let the watcher look at once."""
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


def describe(exc: ValidationError) -> str:
    """The first few problems of `exc`, each naming its field, as one line."""
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
        raise InvalidInput(describe(exc)) from None


def respond(payload: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response of a view (serialized in JSON mode) or of a plain dict."""
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json")
