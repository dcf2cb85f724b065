"""The OpenAPI document describes every route, every $ref in it resolves, the ecosystem's
validator accepts it and its operations are named as a client's calls."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

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


async def test_served_document_is_valid_openapi(api: Api) -> None:
    document = await api.ok("GET", "/openapi.json")
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []
    validate(document)  # raises on the first problem, with its path in the document


async def test_operations_are_named_verb_object(api: Api) -> None:
    document = await api.ok("GET", "/openapi.json")
    names = {
        (method.upper(), path): operation["operationId"]
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert len(set(names.values())) == len(names) == len(ROUTES)
    for name in names.values():
        assert re.fullmatch(r"(create|list|get|update|delete|add|remove|clear|set)_[a-z_]+", name)
    for singular, plural in (
        ("project", "projects"),
        ("network", "networks"),
        ("subnet", "subnets"),
        ("router", "routers"),
        ("port", "ports"),
        ("instance", "instances"),
    ):
        assert names["POST", f"/v1/{plural}"] == f"create_{singular}"
        assert names["GET", f"/v1/{plural}"] == f"list_{plural}"
        assert names["GET", f"/v1/{plural}/{{id}}"] == f"get_{singular}"
        assert names["PATCH", f"/v1/{plural}/{{id}}"] == f"update_{singular}"
        assert names["DELETE", f"/v1/{plural}/{{id}}"] == f"delete_{singular}"
    assert names["POST", "/v1/routers/{id}/interfaces"] == "add_router_interface"
    assert names["DELETE", "/v1/routers/{id}/interfaces/{subnet_id}"] == "remove_router_interface"
    assert names["GET", "/v1/changes"] == "list_changes"
    assert names["GET", "/v1/agents"] == "list_agents"
    assert names["GET", "/v1/agents/{id}"] == "get_agent"
    assert names["POST", "/v1/agents"] == "set_agent_state"
    assert names["DELETE", "/v1/agents/{id}"] == "delete_agent"


async def test_update_fields_have_no_default(api: Api) -> None:
    """Left out means "keep": no update schema says a field defaults to anything (a
    `default: null` would contradict non-null types and make clients send null)."""
    schemas = (await api.ok("GET", "/openapi.json"))["components"]["schemas"]
    updates = [name for name in schemas if name.endswith("Update")]
    assert len(updates) == 6
    for name in updates:
        assert schemas[name]["properties"], name
        for field, schema in schemas[name]["properties"].items():
            assert "default" not in schema, (name, field)
    gateway = schemas["SubnetUpdate"]["properties"]["gateway_ip"]
    assert {"type": "null"} in gateway["anyOf"]  # null still clears the gateway
