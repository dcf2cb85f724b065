"""OpenAPI 3.1 document built from the route table and the pydantic models (no second schema)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue, models_json_schema

from metastack import __version__
from metastack.api.control.table import Route

REF = "#/components/schemas/{model}"
_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    204: "Deleted",
    400: "Invalid input: the message names the field",
    401: "X-Auth-Token missing or wrong (when an admin token is configured)",
    404: "No such object",
    409: "Conflicts with existing objects (duplicate id, IP, MAC; still in use)",
    410: "The changes after `since` were pruned (`change_retention`): the body also holds "
    "`oldest_revision` (the oldest kept) and `revision` (the current one); read everything "
    "again and follow from `revision`",
    413: "Request body too large",
    503: "The database is unavailable",
}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _schemas(routes: Sequence[Route]) -> tuple[dict[Any, JsonSchemaValue], dict[str, Any]]:
    inputs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for route in routes:
        if route.body is not None and (route.body, "validation") not in inputs:
            inputs.append((route.body, "validation"))
        if route.response is not None and (route.response, "serialization") not in inputs:
            inputs.append((route.response, "serialization"))
    refs, top = models_json_schema(inputs, ref_template=REF)
    return refs, top.get("$defs", {})


def _json(schema: JsonSchemaValue) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route, refs: dict[Any, JsonSchemaValue]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    for param in route.query:
        schema = {"type": "array", "items": param.schema} if param.repeatable else param.schema
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": schema,
                **({"style": "form", "explode": True} if param.repeatable else {}),
            }
        )
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": _DESCRIPTIONS[route.status]}
    if route.response is not None:
        ok["content"] = _json(refs[(route.response, "serialization")])
    responses[str(route.status)] = ok
    for status in sorted({*route.errors, 400, 401, 503}):
        error = {"$ref": "#/components/schemas/Error"}
        responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": _json(error)}
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        body = refs[(route.body, "validation")]
        operation["requestBody"] = {"required": True, "content": _json(body)}
    return operation


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes`."""
    refs, schemas = _schemas(routes)
    schemas["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metastack control API",
            "version": __version__,
            "description": "Projects, networks, subnets, routers, ports and instances whose "
            "metadata metastack serves, and the change feed that agents follow.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
            },
        },
        "security": [{}, {"token": []}],
        "paths": paths,
    }
