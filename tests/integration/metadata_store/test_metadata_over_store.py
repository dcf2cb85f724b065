"""Control API and metadata API on one real store (SQLite and PostgreSQL), spoken to over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url

from metastack import identity
from metastack.api.control import make_control_app
from metastack.api.metadata_app import MetadataServer
from metastack.config import ApiConfig
from metastack.store.sql import SqlStore

SECRET = "store-test-secret"


@dataclass
class Cloud:
    control: str
    metadata: str
    http: aiohttp.ClientSession
    sqlite: bool

    async def post(self, path: str, body: dict[str, Any], status: int = 201) -> Any:
        async with self.http.post(self.control + path, json=body) as r:
            assert r.status == status, await r.text()
            return await r.json() if r.status != 204 else None

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.patch(self.control + path, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def get(
        self, path: str, instance: dict[str, Any], tenant: str | None = None
    ) -> tuple[int, bytes, str]:
        uuid = instance["uuid"]
        headers = {
            identity.INSTANCE_ID: uuid,
            identity.TENANT_ID: tenant or instance["project_id"],
            identity.INSTANCE_ID_SIGNATURE: identity.sign_instance_id(SECRET, uuid),
            identity.FORWARDED_FOR: "10.0.0.5",
        }
        async with self.http.get(self.metadata + path, headers=headers) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def eventually(
        self, path: str, instance: dict[str, Any], expected: bytes, within: float = 1.0
    ) -> float:
        """Seconds until `path` answers `expected`: 0 on SQLite, at most `within` otherwise."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            _, body, _ = await self.get(path, instance)
            if body == expected:
                return loop.time() - started
            assert not self.sqlite, f"SQLite must serve the change on the next request: {body!r}"
            assert loop.time() - started < within, f"still {body!r} after {within} s"
            await asyncio.sleep(0.01)


@pytest.fixture
async def cloud(sql_store: SqlStore, database_url: str) -> AsyncIterator[Cloud]:
    config = ApiConfig.model_validate(
        {"database_url": database_url, "metadata_proxy_shared_secret": SECRET}
    )
    runner = web.AppRunner(make_control_app(config, sql_store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control = f"http://127.0.0.1:{runner.addresses[0][1]}"
    metadata = MetadataServer(config, sql_store)
    await metadata.start()
    sqlite = make_url(database_url).get_backend_name() == "sqlite"
    async with aiohttp.ClientSession() as http:
        yield Cloud(control, f"http://127.0.0.1:{metadata.port}", http, sqlite)
    await metadata.close(1.0)
    await runner.cleanup()


async def boot(cloud: Cloud, project: str, ip: str, **fields: Any) -> dict[str, Any]:
    network = await cloud.post("/v1/networks", {"name": f"net-{project}", "project_id": project})
    await cloud.post(
        "/v1/subnets",
        {
            "network_id": network["id"],
            "cidr": "10.0.0.0/24",
            "ip_version": 4,
            "gateway_ip": "10.0.0.1",
            "dns_nameservers": ["10.0.0.3"],
        },
    )
    body = {
        "name": f"vm-{project}",
        "project_id": project,
        "networks": [{"network_id": network["id"], "ip_address": ip}],
        **fields,
    }
    instance: dict[str, Any] = await cloud.post("/v1/instances", body)
    return instance


async def crawl_ec2(cloud: Cloud, instance: dict[str, Any], path: str) -> dict[str, Any]:
    """Walk the EC2 tree the way cloud-init does; every listed entry must answer 200."""
    status, body, _ = await cloud.get(path, instance)
    assert status == 200, (path, body)
    tree: dict[str, Any] = {}
    for line in body.decode().split("\n"):
        if line.endswith("/"):
            tree[line[:-1]] = await crawl_ec2(cloud, instance, path + line)
        elif path.endswith("public-keys/"):  # "0=keyname" names the directory "0/"
            index = line.split("=")[0]
            tree[index] = await crawl_ec2(cloud, instance, f"{path}{index}/")
        else:
            status, leaf, _ = await cloud.get(path + line, instance)
            assert status == 200, (path + line, leaf)
            tree[line] = leaf.decode()
    return tree


async def test_instance_created_through_control_api_is_served(cloud: Cloud) -> None:
    user_data = b"#cloud-config\nhostname: from-user-data\n"
    instance = await boot(
        cloud,
        "proj-a",
        "10.0.0.5",
        key_name="mykey",
        public_key="ssh-ed25519 AAAAkey me@host",
        user_data=base64.b64encode(user_data).decode(),
        metadata={"role": "web", "ünï": "cödé"},
        availability_zone="zone-1",
    )
    tree = await crawl_ec2(cloud, instance, "/latest/meta-data/")
    assert tree["instance-id"] == instance["ec2_id"]
    assert tree["local-ipv4"] == "10.0.0.5"
    assert tree["placement"] == {"availability-zone": "zone-1"}
    assert tree["public-keys"]["0"] == {"openssh-key": "ssh-ed25519 AAAAkey me@host"}
    status, body, _ = await cloud.get("/latest/user-data", instance)
    assert (status, body) == (200, user_data)

    status, body, ctype = await cloud.get("/openstack/latest/meta_data.json", instance)
    assert (status, ctype) == (200, "application/json")
    meta = json.loads(body)
    assert meta["uuid"] == instance["uuid"]
    assert meta["meta"] == {"role": "web", "ünï": "cödé"}
    assert meta["public_keys"] == {"mykey": "ssh-ed25519 AAAAkey me@host"}
    status, body, _ = await cloud.get("/openstack/latest/network_data.json", instance)
    network_data = json.loads(body)
    assert network_data["services"] == [{"type": "dns", "address": "10.0.0.3"}]
    assert [n["type"] for n in network_data["networks"]] == ["ipv4_dhcp"]
    port = instance["ports"][0]
    port_id = port if isinstance(port, str) else port["id"]
    assert network_data["links"][0]["vif_id"] == port_id


async def test_update_is_visible_on_next_request(cloud: Cloud) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5", hostname="before")
    status, body, _ = await cloud.get("/latest/meta-data/hostname", instance)
    assert (status, body) == (200, b"before.novalocal")
    await cloud.patch(f"/v1/instances/{instance['uuid']}", {"hostname": "after"})
    await cloud.eventually("/latest/meta-data/hostname", instance, b"after.novalocal")
    await cloud.patch(f"/v1/instances/{instance['uuid']}", {"metadata": {"k": "v2"}})
    status, body, _ = await cloud.get("/openstack/latest/meta_data.json", instance)
    if cloud.sqlite:
        assert json.loads(body)["meta"] == {"k": "v2"}


async def test_network_change_reaches_network_data(cloud: Cloud) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5")
    network_id = (await cloud_port(cloud, instance))["network_id"]
    await cloud.patch(f"/v1/networks/{network_id}", {"mtu": 1400})
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        _, body, _ = await cloud.get("/openstack/latest/network_data.json", instance)
        if json.loads(body)["links"][0]["mtu"] == 1400:
            break
        assert not cloud.sqlite and loop.time() - started < 1.0
        await asyncio.sleep(0.01)


async def cloud_port(cloud: Cloud, instance: dict[str, Any]) -> dict[str, Any]:
    async with cloud.http.get(cloud.control + f"/v1/ports?device_id={instance['uuid']}") as r:
        ports: list[dict[str, Any]] = (await r.json())["ports"]
    return ports[0]


async def test_overlapping_ips_in_two_projects_stay_apart(cloud: Cloud) -> None:
    a = await boot(cloud, "proj-a", "10.0.0.5")
    b = await boot(cloud, "proj-b", "10.0.0.5")
    _, body_a, _ = await cloud.get("/openstack/latest/meta_data.json", a)
    _, body_b, _ = await cloud.get("/openstack/latest/meta_data.json", b)
    assert json.loads(body_a)["uuid"] == a["uuid"]
    assert json.loads(body_b)["uuid"] == b["uuid"]
    status, body, _ = await cloud.get("/openstack/latest/meta_data.json", a, tenant="proj-b")
    assert status == 404 and a["uuid"].encode() not in body


async def test_password_is_written_once_to_the_store(cloud: Cloud, sql_store: SqlStore) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5")
    headers = {
        identity.INSTANCE_ID: instance["uuid"],
        identity.TENANT_ID: "proj-a",
        identity.INSTANCE_ID_SIGNATURE: identity.sign_instance_id(SECRET, instance["uuid"]),
    }
    url = cloud.metadata + "/openstack/2013-04-04/password"
    async with cloud.http.post(url, headers=headers, data=b"encrypted==") as r:
        assert r.status == 200
    async with cloud.http.post(url, headers=headers, data=b"again") as r:
        assert r.status == 409
    loaded = sql_store.load_instance(instance["uuid"])
    assert loaded is not None and loaded.password == "encrypted=="
    async with cloud.http.get(url, headers=headers) as r:
        assert await r.read() == b"encrypted=="
    async with cloud.http.delete(cloud.control + f"/v1/instances/{instance['uuid']}/password") as r:
        assert r.status == 204
    await cloud.eventually("/openstack/2013-04-04/password", instance, b"")


async def test_deleted_instance_is_404_next(cloud: Cloud) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5")
    assert (await cloud.get("/latest/meta-data/", instance))[0] == 200
    async with cloud.http.delete(cloud.control + f"/v1/instances/{instance['uuid']}") as r:
        assert r.status == 204
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (await cloud.get("/latest/meta-data/", instance))[0] != 404:
        assert not cloud.sqlite and loop.time() - started < 1.0
        await asyncio.sleep(0.01)


async def test_instance_without_zone_is_in_nova(cloud: Cloud) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5")
    assert instance["availability_zone"] == "nova"
    status, body, _ = await cloud.get("/latest/meta-data/placement/availability-zone", instance)
    assert (status, body) == (200, b"nova")


async def served_meta(cloud: Cloud, instance: dict[str, Any], expected: dict[str, str]) -> None:
    """meta_data.json's `meta` is `expected`: on the next request on SQLite, within 1 s on
    PostgreSQL (whose workers poll the revision)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        status, body, _ = await cloud.get("/openstack/latest/meta_data.json", instance)
        assert status == 200, body
        meta = json.loads(body)["meta"]
        if meta == expected:
            return
        assert not cloud.sqlite, f"SQLite must serve the change on the next request: {meta}"
        assert loop.time() - started < 1.0, f"still {meta} after 1 s"
        await asyncio.sleep(0.01)


async def test_merged_metadata_is_served_next(cloud: Cloud) -> None:
    instance = await boot(cloud, "proj-a", "10.0.0.5", metadata={"role": "web", "tier": "1"})
    await served_meta(cloud, instance, {"role": "web", "tier": "1"})
    path = f"{cloud.control}/v1/instances/{instance['uuid']}/metadata"
    async with cloud.http.post(path, json={"metadata": {"tier": "2", "env": "prod"}}) as r:
        assert r.status == 200, await r.text()
    await served_meta(cloud, instance, {"role": "web", "tier": "2", "env": "prod"})
    async with cloud.http.delete(path, params=[("key", "role"), ("key", "tier")]) as r:
        assert r.status == 200, await r.text()
    await served_meta(cloud, instance, {"env": "prod"})
