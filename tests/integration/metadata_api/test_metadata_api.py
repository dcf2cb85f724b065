"""The metadata API served for real on an ephemeral port, against a fake store."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import pytest
from aiohttp import web

from metastack import identity
from metastack.store.base import Change
from support.metadata_fakes import FakeStore, make_instance, signed

UUID_A = "11111111-1111-4111-8111-111111111111"
UUID_B = "22222222-2222-4222-8222-222222222222"


async def test_root_lists_ec2_versions_without_headers(metadata_api: Any) -> None:
    _, http = await metadata_api()
    for path in ("/", "/foo/..", "/latest/.."):
        async with http.get(path) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
            body = await response.read()
            assert body.split(b"\n")[0] == b"1.0"
            assert body.endswith(b"2009-04-04\nlatest")


@pytest.mark.parametrize(
    ("missing", "status"),
    [
        (identity.INSTANCE_ID, 400),
        (identity.INSTANCE_ID_SIGNATURE, 400),
        (identity.TENANT_ID, 400),
    ],
)
async def test_missing_identity_header_is_400(
    metadata_api: Any, store: FakeStore, missing: str, status: int
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    headers = signed(UUID_A, "proj-a")
    del headers[missing]
    async with http.get("/openstack/latest/meta_data.json", headers=headers) as response:
        assert response.status == status
        assert missing.lower() in (await response.text()).lower()


async def test_bad_signature_is_403_and_loads_nothing(metadata_api: Any, store: FakeStore) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    for headers in (
        signed(UUID_A, "proj-a", secret="wrong"),
        {**signed(UUID_A, "proj-a"), identity.INSTANCE_ID_SIGNATURE: ""},
        {**signed(UUID_B, "proj-a"), identity.INSTANCE_ID: UUID_A},
    ):
        async with http.get("/latest/meta-data/instance-id", headers=headers) as response:
            assert response.status == 403
    assert store.loads == 0


async def test_project_mismatch_and_unknown_instance_are_404(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    async with http.get("/latest/meta-data/", headers=signed(UUID_A, "proj-b")) as response:
        assert response.status == 404
        assert UUID_A not in await response.text()
    async with http.get("/latest/meta-data/", headers=signed(UUID_B, "proj-a")) as response:
        assert response.status == 404


async def test_error_pages_are_webobs_in_the_form_accept_asks(
    metadata_api: Any, store: FakeStore
) -> None:
    """nova's answer bytes: WebOb's page, HTML for `*/*` (what both agents send), plain
    text without an Accept header, JSON when asked."""
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    path = "/latest/meta-data/no-such-key"
    explanation = "The resource could not be found."
    for accept, content_type, body in [
        ("*/*", "text/html; charset=UTF-8", f"  <h1>404 Not Found</h1>\n  {explanation}<br />"),
        ("text/plain", "text/plain; charset=UTF-8", f"404 Not Found\n\n{explanation}\n\n   "),
        ("application/json", "application/json", '"code": "404 Not Found"'),
    ]:
        headers = {**signed(UUID_A, "proj-a"), "Accept": accept}
        async with http.get(path, headers=headers) as response:
            assert (response.status, response.headers["Content-Type"]) == (404, content_type)
            assert body in await response.text()
    headers = {**signed(UUID_A, "proj-a", secret="wrong"), "Accept": "text/plain"}
    async with http.get(path, headers=headers) as response:
        assert await response.text() == "403 Forbidden\n\nInvalid proxy request signature.\n\n   "


async def test_signed_request_gets_own_documents(metadata_api: Any, store: FakeStore) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5", user_data=b"#!/bin/sh\necho hi\n"))
    store.put(make_instance(UUID_B, "proj-b", "10.0.0.5"))
    _, http = await metadata_api()
    async with http.get("/openstack/latest/meta_data.json", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/json"
        document = json.loads(await r.read())
        assert document["uuid"] == UUID_A
        assert len(base64.b64decode(document["random_seed"])) == 512
    async with http.get("/openstack/latest/meta_data.json", headers=signed(UUID_B, "proj-b")) as r:
        assert json.loads(await r.read())["uuid"] == UUID_B
    async with http.get("/latest/user-data", headers=signed(UUID_A, "proj-a")) as r:
        assert await r.read() == b"#!/bin/sh\necho hi\n"
    async with http.get("/latest/user-data", headers=signed(UUID_B, "proj-b")) as r:
        assert r.status == 404


async def test_random_seed_differs_per_request_from_cache(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    seeds = set()
    for _ in range(3):
        async with http.get(
            "/openstack/2013-04-04/meta_data.json", headers=signed(UUID_A, "proj-a")
        ) as r:
            seeds.add(json.loads(await r.read())["random_seed"])
    assert len(seeds) == 3
    assert store.loads == 1


async def test_any_method_returns_the_document_and_head_has_no_body(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    for method in ("GET", "POST", "PUT", "DELETE"):
        async with http.request(
            method, "/latest/meta-data/instance-id", headers=signed(UUID_A, "proj-a")
        ) as r:
            assert r.status == 200
            assert await r.read() == b"i-00000001"
    async with http.head("/latest/meta-data/instance-id", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200
        assert await r.read() == b""


async def test_update_is_visible_on_next_request(metadata_api: Any, store: FakeStore) -> None:
    instance = make_instance(UUID_A, "proj-a", "10.0.0.5", hostname="old")
    store.put(instance)
    _, http = await metadata_api()
    async with http.get("/latest/meta-data/local-hostname", headers=signed(UUID_A, "proj-a")) as r:
        assert await r.read() == b"old.novalocal"
    store.put(dataclasses.replace(instance, hostname="new"))
    await asyncio.sleep(0.05)  # the polling watcher's interval in this fixture is 10 ms
    async with http.get("/latest/meta-data/local-hostname", headers=signed(UUID_A, "proj-a")) as r:
        assert await r.read() == b"new.novalocal"


async def test_store_down_is_503_and_recovers(metadata_api: Any, store: FakeStore) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    store.down = True
    async with http.get("/latest/meta-data/", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 503
    store.down = False
    async with http.get("/latest/meta-data/", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200


async def test_password_get_post_once_then_409(metadata_api: Any, store: FakeStore) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    path = "/openstack/latest/password"
    headers = signed(UUID_A, "proj-a")
    async with http.get(path, headers=headers) as r:
        assert (r.status, await r.read()) == (200, b"")
        assert r.headers["Content-Type"] == "text/html; charset=UTF-8"
    async with http.post(path, headers=headers, data=b"x" * 1021) as r:
        assert r.status == 400
    async with http.put(path, headers=headers, data=b"abc") as r:
        assert r.status == 400
    async with http.post(path, headers=headers, data=b"secret-blob") as r:
        assert (r.status, await r.read()) == (200, b"")
    async with http.post(path, headers=headers, data=b"other") as r:
        assert r.status == 409
    async with http.get(path, headers=headers) as r:
        assert await r.read() == b"secret-blob"
    assert store.instances[UUID_A].password == "secret-blob"
    async with http.get("/openstack/2012-08-10/password", headers=headers) as r:
        assert r.status == 404


async def test_password_oversize_chunked_body_is_400(metadata_api: Any, store: FakeStore) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()

    async def chunks() -> Any:
        for _ in range(11):
            yield b"y" * 100

    async with http.post(
        "/openstack/latest/password", headers=signed(UUID_A, "proj-a"), data=chunks()
    ) as r:
        assert r.status == 400
    assert store.instances[UUID_A].password == ""


async def test_direct_mode_finds_instance_by_peer_address(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "127.0.0.1"))
    store.put(make_instance(UUID_B, "proj-b", "10.9.9.9"))
    _, http = await metadata_api(service_metadata_proxy=False)
    # a forged X-Forwarded-For from an untrusted peer is ignored
    async with http.get(
        "/latest/meta-data/instance-id", headers={identity.FORWARDED_FOR: "10.9.9.9"}
    ) as r:
        assert r.status == 200
        assert await r.read() == b"i-00000001"
    async with http.get("/openstack/latest/meta_data.json") as r:
        assert json.loads(await r.read())["uuid"] == UUID_A


async def test_direct_mode_believes_xff_only_from_trusted_proxies(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_B, "proj-b", "10.9.9.9", ec2_id=2))
    _, http = await metadata_api(service_metadata_proxy=False, trusted_proxies=["127.0.0.0/8"])
    async with http.get(
        "/latest/meta-data/instance-id", headers={identity.FORWARDED_FOR: "10.9.9.9"}
    ) as r:
        assert await r.read() == b"i-00000002"
    async with http.get(
        "/latest/meta-data/instance-id", headers={identity.FORWARDED_FOR: "10.1.1.1"}
    ) as r:
        assert r.status == 404
    async with http.get(
        "/latest/meta-data/instance-id", headers={identity.FORWARDED_FOR: "not-an-ip"}
    ) as r:
        assert r.status == 400


async def test_vendordata_static_and_dynamic(
    metadata_api: Any, store: FakeStore, tmp_path: Any
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    static = tmp_path / "vendor.json"
    static.write_text(json.dumps({"cloud-init": "#cloud-config\n{}"}))
    received: list[dict[str, Any]] = []

    async def good(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"answer": 42})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"late": True})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json")

    target_app = web.Application()
    target_app.router.add_post("/good", good)
    target_app.router.add_post("/slow", slow)
    target_app.router.add_post("/broken", broken)
    runner = web.AppRunner(target_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        _, http = await metadata_api(
            vendordata={
                "providers": ["StaticJSON", "DynamicJSON"],
                "static_json": str(static),
                "dynamic_targets": [
                    f"good@http://127.0.0.1:{port}/good",
                    f"slow@http://127.0.0.1:{port}/slow",
                    f"broken@http://127.0.0.1:{port}/broken",
                ],
                "dynamic_read_timeout": 0.5,
                "dynamic_connect_timeout": 0.5,
            }
        )
        headers = signed(UUID_A, "proj-a")
        async with http.get("/openstack/latest/vendor_data.json", headers=headers) as r:
            assert json.loads(await r.read()) == {"cloud-init": "#cloud-config\n{}"}
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with http.get("/openstack/latest/vendor_data2.json", headers=headers) as r:
            assert r.status == 200
            document = json.loads(await r.read())
        assert loop.time() - started < 2.0
        assert document == {"static": {"cloud-init": "#cloud-config\n{}"}, "good": {"answer": 42}}
        assert received[0]["instance-id"] == UUID_A
        assert received[0]["project-id"] == "proj-a"
    finally:
        await runner.cleanup()


async def test_created_instance_is_rendered_before_its_guest_asks(
    metadata_api: Any, store: FakeStore
) -> None:
    _, http = await metadata_api()
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    for _ in range(100):  # the warmer looks every 0.2 s
        if store.loads:
            break
        await asyncio.sleep(0.02)
    assert store.loads == 1
    async with http.get("/latest/meta-data/instance-id", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200
    assert store.loads == 1  # served from the pre-rendered entry


async def test_prewarm_off_renders_on_first_request(metadata_api: Any, store: FakeStore) -> None:
    _, http = await metadata_api(metadata_cache_prewarm=False)
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    await asyncio.sleep(0.5)
    assert store.loads == 0
    async with http.get("/latest/meta-data/instance-id", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200
    assert store.loads == 1


async def test_address_the_instance_no_longer_holds_is_404_with_the_mismatch_header(
    metadata_api: Any, store: FakeStore
) -> None:
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    _, http = await metadata_api()
    for xff in ("10.0.0.5", "::ffff:10.0.0.5"):
        async with http.get("/latest/meta-data/", headers=signed(UUID_A, "proj-a", xff=xff)) as r:
            assert r.status == 200
            assert identity.ADDRESS_MISMATCH not in r.headers
    for xff in ("10.0.0.99", "fe80::1", "not-an-address"):
        async with http.get("/latest/meta-data/", headers=signed(UUID_A, "proj-a", xff=xff)) as r:
            assert r.status == 404
            assert r.headers[identity.ADDRESS_MISMATCH] == "1"
            assert UUID_A not in await r.text()


def test_link_local_source_is_held_through_the_port_mac() -> None:
    from metastack.api.metadata_app import holds_address

    instance = make_instance(UUID_A, "proj-a", "10.0.0.5")  # port MAC fa:16:3e:00:00:01
    assert holds_address(instance, "fe80::f816:3eff:fe00:1")
    assert not holds_address(instance, "fe80::f816:3eff:fe00:2")
    assert not holds_address(instance, "fe80::1234:5678:9abc:def0")  # no EUI-64 id


async def test_a_network_wide_change_renders_every_cached_instance_again(
    metadata_api: Any, store: FakeStore
) -> None:
    _, http = await metadata_api()
    store.put(make_instance(UUID_A, "proj-a", "10.0.0.5"))
    for _ in range(100):
        if store.loads:
            break
        await asyncio.sleep(0.02)
    assert store.loads == 1
    # A subnet (or a DHCP or router port) changes: every rendered document may be stale.
    store.changes.append(Change(len(store.changes) + 1, "subnet", "s1", "update", "proj-a"))
    for _ in range(100):  # dropped, then rendered again by the warmer
        if store.loads == 2:
            break
        await asyncio.sleep(0.02)
    assert store.loads == 2
    async with http.get("/latest/meta-data/instance-id", headers=signed(UUID_A, "proj-a")) as r:
        assert r.status == 200
    assert store.loads == 2  # the guest found it rendered
