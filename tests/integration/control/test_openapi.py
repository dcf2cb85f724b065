"""The OpenAPI document describes every route and every $ref in it resolves."""

from __future__ import annotations

from typing import Any

from metastack.api.control.routes import ROUTES

from .conftest import Api


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_document_covers_routes(api: Api) -> None:
    document = await api.ok("GET", "/openapi.json")
    assert document["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert schemas[ref.removeprefix("#/components/schemas/")]
    network = schemas["NetworkCreate"]
    assert network["additionalProperties"] is False
    assert set(network["properties"]) == {"id", "name", "project_id", "mtu"}
    assert "null" not in str(schemas["NetworkUpdate"]["properties"]["name"])
    ports = document["paths"]["/v1/ports"]["get"]["parameters"]
    assert {p["name"] for p in ports} >= {"network_id", "ip_address", "mac_address", "device_id"}
