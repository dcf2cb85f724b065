"""CRUD of every resource over HTTP: 201 bodies, pinned field names, filters, router interfaces."""

from __future__ import annotations

import base64
from typing import Any

from .conftest import Api

NETWORK_FIELDS = {"id", "name", "project_id", "mtu"}
SUBNET_FIELDS = {
    "id", "network_id", "cidr", "ip_version", "gateway_ip", "dns_nameservers", "host_routes",
    "enable_dhcp", "ipv6_address_mode",
}  # fmt: skip
PORT_FIELDS = {
    "id", "network_id", "project_id", "mac_address", "fixed_ips", "device_id", "device_owner",
    "floating_ip", "vif_type", "device_name",
}  # fmt: skip
INSTANCE_FIELDS = {
    "uuid", "name", "hostname", "project_id", "user_id", "availability_zone", "launch_index",
    "reservation_id", "image_ref", "flavor_name", "kernel_id", "ramdisk_id", "root_device_name",
    "block_device_mapping", "key_name", "key_type", "public_key", "user_data", "metadata",
    "security_groups", "device_tags",
}  # fmt: skip


async def network_with_subnet(api: Api, cidr: str = "10.0.0.0/24") -> tuple[dict[str, Any], str]:
    network = await api.ok("POST", "/v1/networks", 201, json={"name": "n", "project_id": "p1"})
    subnet = await api.ok(
        "POST", "/v1/subnets", 201, json={"network_id": network["id"], "cidr": cidr}
    )
    return network, subnet["id"]


async def test_project_crud(api: Api) -> None:
    created = await api.ok("POST", "/v1/projects", 201, json={"id": "demo", "name": "Demo"})
    assert created["id"] == "demo"
    assert await api.ok("GET", "/v1/projects/demo") == created
    assert (await api.ok("GET", "/v1/projects"))["projects"] == [created]
    patched = await api.ok("PATCH", "/v1/projects/demo", json={"description": "d"})
    assert patched["description"] == "d" and patched["name"] == "Demo"
    await api.ok("DELETE", "/v1/projects/demo", 204)
    assert (await api.call("GET", "/v1/projects/demo")).status == 404


async def test_network_and_subnet_crud(api: Api) -> None:
    network = await api.ok(
        "POST", "/v1/networks", 201, json={"name": "net", "project_id": "p1", "mtu": 1450}
    )
    assert set(network) >= NETWORK_FIELDS and network["mtu"] == 1450
    subnet = await api.ok(
        "POST",
        "/v1/subnets",
        201,
        json={
            "network_id": network["id"],
            "cidr": "10.0.0.0/24",
            "dns_nameservers": ["8.8.8.8"],
            "host_routes": [{"destination": "10.1.0.0/16", "nexthop": "10.0.0.254"}],
            "enable_dhcp": False,
        },
    )
    assert set(subnet) >= SUBNET_FIELDS
    assert (subnet["gateway_ip"], subnet["ip_version"], subnet["enable_dhcp"]) == (
        "10.0.0.1",
        4,
        False,
    )
    v6 = await api.ok(
        "POST",
        "/v1/subnets",
        201,
        json={"network_id": network["id"], "cidr": "fd00::/64", "ipv6_address_mode": "slaac"},
    )
    assert (v6["ip_version"], v6["gateway_ip"]) == (6, "fd00::1")
    shown = await api.ok("GET", f"/v1/networks/{network['id']}")
    assert shown["subnets"] == [subnet["id"], v6["id"]]
    listed = await api.ok("GET", f"/v1/subnets?network_id={network['id']}")
    assert [s["id"] for s in listed["subnets"]] == [subnet["id"], v6["id"]]
    assert (await api.ok("GET", "/v1/networks?name=net"))["networks"][0]["id"] == network["id"]
    assert (await api.ok("GET", "/v1/networks?name=other"))["networks"] == []
    patched = await api.ok("PATCH", f"/v1/subnets/{subnet['id']}", json={"gateway_ip": None})
    assert patched["gateway_ip"] is None
    assert (await api.ok("PATCH", f"/v1/networks/{network['id']}", json={"mtu": 9000}))[
        "mtu"
    ] == 9000
    await api.ok("DELETE", f"/v1/subnets/{v6['id']}", 204)
    await api.ok("DELETE", f"/v1/networks/{network['id']}", 204)
    assert (await api.ok("GET", "/v1/subnets"))["subnets"] == []


async def test_port_crud_and_filters(api: Api) -> None:
    network, subnet_id = await network_with_subnet(api)
    other, _ = await network_with_subnet(api)
    port = await api.ok(
        "POST",
        "/v1/ports",
        201,
        json={
            "network_id": network["id"],
            "fixed_ips": [{"ip_address": "10.0.0.5"}],
            "mac_address": "FA:16:3E:00:00:05",
            "device_owner": "network:dhcp",
            "floating_ip": "203.0.113.5",
            "device_name": "tap0",
        },
    )
    assert set(port) >= PORT_FIELDS
    assert port["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": "10.0.0.5"}]
    assert port["mac_address"] == "fa:16:3e:00:00:05" and port["vif_type"] == "bridge"
    same_ip_elsewhere = await api.ok(
        "POST",
        "/v1/ports",
        201,
        json={"network_id": other["id"], "fixed_ips": [{"ip_address": "10.0.0.5"}]},
    )

    async def ids(query: str) -> list[str]:
        return [p["id"] for p in (await api.ok("GET", "/v1/ports?" + query))["ports"]]

    assert await ids("ip_address=10.0.0.5") == [port["id"], same_ip_elsewhere["id"]]
    assert await ids(f"network_id={network['id']}&ip_address=10.0.0.5") == [port["id"]]
    both = f"network_id={network['id']}&network_id={other['id']}"
    assert await ids(both + "&ip_address=10.0.0.5") == [port["id"], same_ip_elsewhere["id"]]
    assert await ids("mac_address=fa:16:3e:00:00:05") == [port["id"]]
    assert await ids("device_owner=network:dhcp") == [port["id"]]
    assert await ids("device_id=nothing") == []
    patched = await api.ok(
        "PATCH", f"/v1/ports/{port['id']}", json={"device_id": "dhcp1", "floating_ip": None}
    )
    assert (patched["device_id"], patched["floating_ip"]) == ("dhcp1", None)
    assert await ids("device_id=dhcp1") == [port["id"]]
    await api.ok("DELETE", f"/v1/ports/{port['id']}", 204)
    assert (await api.call("GET", f"/v1/ports/{port['id']}")).status == 404


async def test_router_interfaces(api: Api) -> None:
    network, subnet_id = await network_with_subnet(api)
    router = await api.ok("POST", "/v1/routers", 201, json={"name": "r", "project_id": "p1"})
    assert router["interfaces"] == []
    path = f"/v1/routers/{router['id']}"
    added = await api.ok("POST", path + "/interfaces", 201, json={"subnet_id": subnet_id})
    [interface] = added["interfaces"]
    assert set(interface) == {"subnet_id", "network_id", "port_id", "ip_address"}
    assert (interface["network_id"], interface["ip_address"]) == (network["id"], "10.0.0.1")
    assert (await api.ok("GET", path))["interfaces"] == [interface]
    assert (await api.call("DELETE", path)).status == 409
    assert (await api.call("DELETE", f"/v1/ports/{interface['port_id']}")).status == 409
    await api.ok("DELETE", f"{path}/interfaces/{subnet_id}", 204)
    assert (await api.call("DELETE", f"{path}/interfaces/{subnet_id}")).status == 404
    assert (await api.ok("PATCH", path, json={"name": "r2"}))["name"] == "r2"
    await api.ok("DELETE", path, 204)


async def test_instance_crud(api: Api) -> None:
    network, _ = await network_with_subnet(api)
    user_data = base64.b64encode(b"#cloud-config\n{}\n").decode()
    body = {
        "uuid": "8e4b2d16-7c0f-4c54-9d0a-1f2e3d4c5b6a",
        "name": "Web 1",
        "project_id": "p1",
        "user_id": "u1",
        "availability_zone": "az1",
        "image_ref": "img-1",
        "flavor_name": "m1.small",
        "key_name": "k",
        "public_key": "ssh-ed25519 AAAA k",
        "user_data": user_data,
        "metadata": {"role": "web", "ключ": "значение"},
        "security_groups": ["default", "web"],
        "networks": [{"network_id": network["id"], "ip_address": "10.0.0.10"}],
    }
    created = await api.ok("POST", "/v1/instances", 201, json=body)
    assert set(created) >= INSTANCE_FIELDS
    assert (created["hostname"], created["ec2_id"], created["user_data"]) == (
        "web-1",
        "i-00000001",
        user_data,
    )
    assert list(created["metadata"]) == ["role", "ключ"]
    [port_id] = created["ports"]
    port = await api.ok("GET", f"/v1/ports/{port_id}")
    assert (port["device_id"], port["device_owner"]) == (body["uuid"], "compute:az1")
    path = f"/v1/instances/{body['uuid']}"
    assert await api.ok("GET", path) == created
    patched = await api.ok("PATCH", path, json={"metadata": {"b": "1"}, "flavor_name": "m1.big"})
    assert (patched["metadata"], patched["flavor_name"]) == ({"b": "1"}, "m1.big")
    assert patched["revision"] > created["revision"]
    listed = await api.ok("GET", "/v1/instances?project_id=p1")
    assert [i["uuid"] for i in listed["instances"]] == [body["uuid"]]
    assert api.store.set_password(body["uuid"], "enc")
    assert (await api.ok("GET", path + "/password"))["password"] == "enc"
    await api.ok("DELETE", path + "/password", 204)
    assert (await api.ok("GET", path + "/password"))["password"] == ""
    await api.ok("DELETE", path, 204)
    assert (await api.call("GET", path)).status == 404
    assert (await api.ok("GET", "/v1/ports"))["ports"] == []
