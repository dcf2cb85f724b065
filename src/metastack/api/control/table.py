"""The route table's types: an operation, its query parameters, and the query check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from pydantic import BaseModel

from metastack.api.control.context import Handler
from metastack.errors import InvalidInput

Query = MultiMapping[str]


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter (documented in OpenAPI, unknown ones are refused)."""

    name: str
    description: str
    repeatable: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: what the router serves and what the OpenAPI document says of it.

    `operation_id` is the operation's name in generated clients: a verb and the object,
    as openstacksdk names its calls (`create_network`, `list_networks`, `get_network`,
    `update_network`, `delete_network`, `add_router_interface`, ...).
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int = 200
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()


def check_query(request: web.Request, allowed: Sequence[Param]) -> Query:
    """The query, refusing parameters not in `allowed` and repeats of single ones."""
    known = {param.name: param for param in allowed}
    for key in set(request.query):
        param = known.get(key)
        if param is None:
            raise InvalidInput(f"{key}: unknown query parameter")
        if not param.repeatable and len(request.query.getall(key)) > 1:
            raise InvalidInput(f"{key}: given more than once")
    return request.query
