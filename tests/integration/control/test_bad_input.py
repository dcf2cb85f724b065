"""Bad requests answer 400/401/404/409/413 with {"error": ...} and write nothing."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest

from .conftest import Api, ApiFactory
from .test_resources import network_with_subnet

UUID = "8e4b2d16-7c0f-4c54-9d0a-1f2e3d4c5b6a"


async def expect_error(
    api: Api, status: int, method: str, path: str, field: str = "", **kwargs: Any
) -> None:
    before = api.store.current_revision()
    answer = await api.call(method, path, **kwargs)
    assert answer.status == status, answer.body
    assert isinstance(answer.body, dict) and isinstance(answer.body["error"], str)
    assert field in answer.body["error"]
    assert api.store.current_revision() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "body"),
        (b'{"project_id": "p", "mtu": "1500"}', "mtu"),
        (b'{"project_id": "p", "mtu": 1500.5}', "mtu"),
        (b'{"project_id": "p", "mtu": 10}', "mtu"),
        (b'{"project_id": "p", "colour": "red"}', "colour"),
        (b'{"name": "n"}', "project_id"),
        (b'{"project_id": "p", "id": "not-a-uuid"}', "id"),
        (b'{"project_id": "p p"}', "project_id"),
    ],
)
async def test_network_body_errors(api: Api, body: bytes, field: str) -> None:
    await expect_error(api, 400, "POST", "/v1/networks", field, data=body)


async def test_subnet_and_port_errors(api: Api) -> None:
    network, subnet_id = await network_with_subnet(api)
    net = network["id"]
    await expect_error(
        api, 400, "POST", "/v1/subnets", "cidr", json={"network_id": net, "cidr": "10.1.0.1/24"}
    )
    await expect_error(
        api, 400, "POST", "/v1/subnets", "cidr", json={"network_id": net, "cidr": "banana"}
    )
    await expect_error(
        api,
        400,
        "POST",
        "/v1/subnets",
        "gateway_ip",
        json={"network_id": net, "cidr": "10.2.0.0/24", "gateway_ip": "10.3.0.1"},
    )
    await expect_error(
        api, 409, "POST", "/v1/subnets", "cidr", json={"network_id": net, "cidr": "10.0.0.0/16"}
    )
    await expect_error(
        api,
        404,
        "POST",
        "/v1/subnets",
        "network_id",
        json={"network_id": UUID, "cidr": "10.9.0.0/24"},
    )
    port = {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.7"}]}
    await api.ok("POST", "/v1/ports", 201, json={**port, "mac_address": "fa:16:3e:00:00:07"})
    await expect_error(api, 409, "POST", "/v1/ports", "ip_address", json=port)
    await expect_error(
        api,
        409,
        "POST",
        "/v1/ports",
        "mac_address",
        json={"network_id": net, "mac_address": "fa:16:3e:00:00:07"},
    )
    await expect_error(
        api,
        400,
        "POST",
        "/v1/ports",
        "fixed_ips",
        json={"network_id": net, "fixed_ips": [{"ip_address": "192.168.9.9"}]},
    )
    await expect_error(
        api,
        400,
        "POST",
        "/v1/ports",
        "fixed_ips",
        json={"network_id": net, "fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.5.0.1"}]},
    )
    await expect_error(
        api,
        400,
        "POST",
        "/v1/ports",
        "ip_address",
        json={"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.300"}]},
    )
    await expect_error(
        api,
        400,
        "POST",
        "/v1/ports",
        "mac_address",
        json={"network_id": net, "mac_address": "01:00:5e:00:00:01"},
    )
    await expect_error(
        api, 400, "POST", "/v1/ports", "mac_address", json={"network_id": net, "mac_address": "zz"}
    )
    await expect_error(api, 400, "GET", "/v1/ports?ip_address=nope", "ip_address")
    await expect_error(api, 400, "GET", "/v1/ports?colour=red", "colour")
    await expect_error(
        api, 400, "PATCH", f"/v1/subnets/{subnet_id}", "cidr", json={"cidr": "10.0.0.0/25"}
    )
    await expect_error(api, 400, "PATCH", f"/v1/networks/{net}", "name", json={"name": None})
    assert len((await api.ok("GET", "/v1/ports"))["ports"]) == 1  # fmt: skip


async def test_instance_errors(api: Api) -> None:
    network, _ = await network_with_subnet(api)
    base = {"uuid": UUID, "name": "vm", "project_id": "p1"}
    await api.ok(
        "POST",
        "/v1/instances",
        201,
        json={**base, "networks": [{"network_id": network["id"], "ip_address": "10.0.0.20"}]},
    )
    await expect_error(api, 409, "POST", "/v1/instances", "uuid", json=base)
    other = {**base, "uuid": "9e4b2d16-7c0f-4c54-9d0a-1f2e3d4c5b6a"}
    await expect_error(
        api,
        409,
        "POST",
        "/v1/instances",
        "10.0.0.20",
        json={**other, "networks": [{"network_id": network["id"], "ip_address": "10.0.0.20"}]},
    )
    await expect_error(
        api,
        404,
        "POST",
        "/v1/instances",
        "network",
        json={**other, "networks": [{"network_id": UUID}]},
    )
    await expect_error(api, 400, "POST", "/v1/instances", "uuid", json={**other, "uuid": "1234"})
    await expect_error(
        api, 400, "POST", "/v1/instances", "user_data", json={**other, "user_data": "not base64!"}
    )
    big = base64.b64encode(b"x" * 49200).decode()  # 65600 bytes of base64
    await expect_error(
        api, 400, "POST", "/v1/instances", "user_data", json={**other, "user_data": big}
    )
    await expect_error(
        api, 400, "POST", "/v1/instances", "metadata", json={**other, "metadata": {"k": 1}}
    )
    await expect_error(
        api, 400, "POST", "/v1/instances", "metadata", json={**other, "metadata": {"k": "v" * 256}}
    )
    await expect_error(
        api, 400, "POST", "/v1/instances", "launch_index", json={**other, "launch_index": "0"}
    )
    await expect_error(
        api, 400, "POST", "/v1/instances", "networks", json={**other, "networks": [{}]}
    )
    await expect_error(
        api,
        413,
        "POST",
        "/v1/instances",
        "",
        data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"),
    )
    assert len((await api.ok("GET", "/v1/instances"))["instances"]) == 1
    assert len((await api.ok("GET", "/v1/ports"))["ports"]) == 1  # fmt: skip


async def test_user_data_limit_follows_config(start_api: ApiFactory) -> None:
    api = await start_api(max_user_data_bytes=8)
    body = {"name": "vm", "project_id": "p1", "user_data": base64.b64encode(b"0123456789").decode()}
    await expect_error(api, 400, "POST", "/v1/instances", "user_data", json=body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/networks/{UUID}"),
        ("PATCH", f"/v1/subnets/{UUID}"),
        ("DELETE", f"/v1/ports/{UUID}"),
        ("GET", f"/v1/routers/{UUID}"),
        ("DELETE", f"/v1/instances/{UUID}"),
        ("DELETE", f"/v1/instances/{UUID}/password"),
        ("POST", f"/v1/routers/{UUID}/interfaces"),
        ("GET", "/v1/projects/nope"),
        ("GET", "/v1/nothing"),
    ],
)
async def test_unknown_ids_404(api: Api, method: str, path: str) -> None:
    body = {"subnet_id": UUID} if "interfaces" in path else {}
    await expect_error(api, 404, method, path, json=body)


async def test_admin_token(start_api: ApiFactory) -> None:
    api = await start_api(admin_token="s3cret")
    await api.ok("GET", "/v1/networks")
    await api.ok("GET", "/openapi.json")
    for headers in ({"X-Auth-Token": "wrong"}, {"X-Auth-Token": ""}):
        await expect_error(api, 401, "GET", "/v1/networks", "X-Auth-Token", headers=headers)
    api.headers = {}
    await expect_error(api, 401, "POST", "/v1/networks", "X-Auth-Token", json={"project_id": "p"})
    await expect_error(api, 401, "GET", "/openapi.json", "X-Auth-Token")
