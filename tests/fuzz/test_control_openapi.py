"""schemathesis against the control API's /openapi.json, served for real over a fresh SQLite."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from metastack.api.control.routes import ROUTES

from .conftest import LiveApi

EXAMPLES = 20  # per operation and generation mode; the whole file runs in about 20 s
MAX_WAIT = 0.2  # the change feed may long-poll up to 60 s; the fuzzer needs no more than this


def error_has_message(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx is JSON `{"error": "<non-empty message>"}`."""
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), content_type
        body = json.loads(response.content)
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str), body
        assert body["error"].strip(), body
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    error_has_message,
]


@pytest.fixture(scope="module")
def control_schema(live_control_api: LiveApi) -> Any:
    """The served document, loaded by schemathesis."""
    return schemathesis.openapi.from_url(live_control_api.base + "/openapi.json")


@pytest.fixture(scope="module")
def existing_ids(live_control_api: LiveApi) -> dict[str, str]:
    """One object of each kind, so path ids sometimes name something real."""
    base = live_control_api.base + "/v1"
    http = requests.Session()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = http.post(base + path, json=body, timeout=10)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    network = post("/networks", {"project_id": "fuzz", "name": "net"})
    subnet = post("/subnets", {"network_id": network["id"], "cidr": "10.20.0.0/24"})
    router = post("/routers", {"project_id": "fuzz", "name": "r"})
    post(f"/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]})
    instance = post(
        "/instances",
        {"name": "vm", "project_id": "fuzz", "networks": [{"network_id": network["id"]}]},
    )
    return {
        "networks": network["id"],
        "subnets": subnet["id"],
        "routers": router["id"],
        "instances": instance["uuid"],
        "ports": instance["ports"][0],
        "subnet_id": subnet["id"],
    }


def _real_params(path: str, ids: dict[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    resource = path.split("/")[2]
    if "{id}" in path and resource in ids:
        params["id"] = ids[resource]
    if "{subnet_id}" in path:
        params["subnet_id"] = ids["subnet_id"]
    return params


def _cases() -> list[Any]:
    """Every operation with valid data; with invalid data where there is something to break."""
    cases = []
    for route in ROUTES:
        name = f"{route.method} {route.path}"
        cases.append(pytest.param(route, GenerationMode.POSITIVE, id=f"{name} valid"))
        if route.body is not None or route.query:  # an unconstrained path id cannot be invalid
            cases.append(pytest.param(route, GenerationMode.NEGATIVE, id=f"{name} invalid"))
    return cases


@pytest.mark.parametrize(("route", "mode"), _cases())
def test_operation_conforms(
    route: Any,
    mode: GenerationMode,
    control_schema: Any,
    existing_ids: dict[str, str],
    live_control_api: LiveApi,
) -> None:
    operation = control_schema[route.path][route.method]
    strategy = operation.as_strategy(generation_mode=mode)
    real = _real_params(route.path, existing_ids)
    if real:
        strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=real))
    http = requests.Session()

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case[Any]) -> None:
        if case.query and "wait" in case.query:
            case.query["wait"] = MAX_WAIT
        case.call_and_validate(
            base_url=live_control_api.base, session=http, timeout=10, checks=CHECKS
        )

    check()
