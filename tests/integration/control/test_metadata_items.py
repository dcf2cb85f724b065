"""Instance metadata merged on the server: POST .../metadata adds or changes the given keys,
DELETE .../metadata?key=K removes them, each in one transaction that keeps the other keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import Api, ApiFactory


async def make_instance(api: Api, metadata: dict[str, str] | None = None) -> str:
    body = {"name": "vm", "project_id": "p1", "metadata": metadata or {}}
    instance = await api.ok("POST", "/v1/instances", 201, json=body)
    return str(instance["uuid"])


async def changes_after(api: Api, revision: int) -> list[dict[str, Any]]:
    answer = await api.ok("GET", f"/v1/changes?since={revision}")
    found: list[dict[str, Any]] = answer["changes"]
    return found


async def test_set_merges_and_delete_removes(api: Api) -> None:
    uuid = await make_instance(api, {"role": "web", "tier": "1"})
    before = await api.ok("GET", f"/v1/instances/{uuid}")
    path = f"/v1/instances/{uuid}/metadata"

    merged = await api.ok("POST", path, json={"metadata": {"tier": "2", "env": "prod"}})
    assert merged == {"metadata": {"role": "web", "tier": "2", "env": "prod"}}
    shown = await api.ok("GET", f"/v1/instances/{uuid}")
    assert shown["metadata"] == {"role": "web", "tier": "2", "env": "prod"}
    assert shown["revision"] > before["revision"]
    assert shown["updated_at"] >= before["updated_at"]
    [change] = await changes_after(api, before["revision"])
    assert (change["resource"], change["resource_id"], change["action"]) == (
        "instance",
        uuid,
        "update",
    )
    assert change["revision"] == shown["revision"]
    assert await api.ok("GET", path) == {"metadata": {"role": "web", "tier": "2", "env": "prod"}}

    remaining = await api.ok("DELETE", f"{path}?key=role&key=env")
    assert remaining == {"metadata": {"tier": "2"}}
    assert (await api.ok("GET", f"/v1/instances/{uuid}"))["metadata"] == {"tier": "2"}
    [change] = await changes_after(api, shown["revision"])
    assert (change["resource_id"], change["action"]) == (uuid, "update")


async def test_keys_with_any_character(api: Api) -> None:
    uuid = await make_instance(api)
    path = f"/v1/instances/{uuid}/metadata"
    odd = {"a/b": "1", "x&y=z": "2", "ünï cödé": "3", "?#%": "4"}
    assert await api.ok("POST", path, json={"metadata": odd}) == {"metadata": odd}
    remaining = await api.ok("DELETE", path, params=[("key", "a/b"), ("key", "?#%")])
    assert remaining == {"metadata": {"x&y=z": "2", "ünï cödé": "3"}}


async def test_merge_up_to_the_item_limit(api: Api) -> None:
    uuid = await make_instance(api, {f"k{i}": "v" for i in range(100)})
    path = f"/v1/instances/{uuid}/metadata"
    more = {f"n{i}": "v" for i in range(28)}
    merged = await api.ok("POST", path, json={"metadata": more})
    assert len(merged["metadata"]) == 128
    changed = await api.ok("POST", path, json={"metadata": {"k0": "changed"}})  # no new key
    assert changed["metadata"]["k0"] == "changed" and len(changed["metadata"]) == 128


async def expect_refused(
    api: Api, uuid: str, status: int, method: str, path: str, words: str, **kwargs: Any
) -> str:
    """`status` with a message holding `words`, and nothing changed: no revision, same meta."""
    revision = api.store.current_revision()
    metadata = (await api.ok("GET", f"/v1/instances/{uuid}"))["metadata"]
    answer = await api.call(method, path, **kwargs)
    assert answer.status == status, answer.body
    message = answer.body["error"]
    assert words in message, message
    assert api.store.current_revision() == revision
    assert (await api.ok("GET", f"/v1/instances/{uuid}"))["metadata"] == metadata
    return str(message)


BAD_METADATA = [
    pytest.param({"k" * 256: "v"}, "must be 1-255 characters", id="key-too-long"),
    pytest.param({"": "v"}, "must be 1-255 characters", id="empty-key"),
    pytest.param({"k": "v" * 256}, "longer than 255 characters", id="value-too-long"),
    pytest.param({"k": 1}, "metadata.k", id="number-value"),
    pytest.param({"k": None}, "metadata.k", id="null-value"),
    pytest.param({"k": ["v"]}, "metadata.k", id="list-value"),
    pytest.param({"k\x00": "v"}, "NUL", id="nul-in-key"),
    pytest.param({f"k{i}": "v" for i in range(129)}, "metadata", id="129-items"),
    pytest.param(["k", "v"], "metadata", id="not-an-object"),
]


@pytest.mark.parametrize(("metadata", "words"), BAD_METADATA)
async def test_bad_items_are_refused_as_update_refuses_them(
    api: Api, metadata: Any, words: str
) -> None:
    """The merge applies the very validation of a whole-metadata update: same 400, same
    message, and neither writes anything."""
    uuid = await make_instance(api, {"keep": "me"})
    body = {"metadata": metadata}
    merge_error = await expect_refused(
        api, uuid, 400, "POST", f"/v1/instances/{uuid}/metadata", words, json=body
    )
    update_error = await expect_refused(
        api, uuid, 400, "PATCH", f"/v1/instances/{uuid}", words, json=body
    )
    assert merge_error == update_error


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "metadata: field required"),
        ({"metadata": {"k": "v"}, "name": "x"}, "name: unknown field"),
        ({"metadata": None}, "metadata"),
    ],
)
async def test_bad_bodies_are_refused(api: Api, body: dict[str, Any], words: str) -> None:
    uuid = await make_instance(api, {"keep": "me"})
    path = f"/v1/instances/{uuid}/metadata"
    await expect_refused(api, uuid, 400, "POST", path, words, json=body)
    await expect_refused(api, uuid, 400, "POST", path, "invalid JSON", data=b"{nope")


async def test_merge_past_the_limit_is_refused(api: Api) -> None:
    uuid = await make_instance(api, {f"k{i}": "v" for i in range(100)})
    more = {f"n{i}": "v" for i in range(29)}
    path = f"/v1/instances/{uuid}/metadata"
    await expect_refused(
        api, uuid, 400, "POST", path, "129 items after the merge", json={"metadata": more}
    )


async def test_bad_deletes_remove_nothing(api: Api) -> None:
    uuid = await make_instance(api, {"a": "1", "b": "2"})
    path = f"/v1/instances/{uuid}/metadata"
    await expect_refused(api, uuid, 400, "DELETE", path, "key: give at least one")
    await expect_refused(api, uuid, 400, "DELETE", path + "?key=", "must be 1-255 characters")
    too_long = [("key", "a"), ("key", "k" * 256)]
    await expect_refused(api, uuid, 400, "DELETE", path, "1-255 characters", params=too_long)
    await expect_refused(api, uuid, 400, "DELETE", path + "?key=a%00", "NUL")
    await expect_refused(api, uuid, 400, "DELETE", path + "?key=a&colour=red", "colour")
    await expect_refused(api, uuid, 404, "DELETE", path + "?key=a&key=nope", "'nope'")
    assert await api.ok("GET", path) == {"metadata": {"a": "1", "b": "2"}}


async def test_unknown_instance_is_404(api: Api) -> None:
    missing = "8e4b2d16-7c0f-4c54-9d0a-1f2e3d4c5b6a"
    path = f"/v1/instances/{missing}/metadata"
    for method, kwargs in (
        ("GET", {}),
        ("POST", {"json": {"metadata": {"k": "v"}}}),
        ("DELETE", {"params": {"key": "k"}}),
    ):
        answer = await api.call(method, path, **kwargs)
        assert answer.status == 404 and missing in answer.body["error"], (method, answer.body)


async def test_concurrent_sets_of_different_keys_all_survive(start_api: ApiFactory) -> None:
    """Three API processes' worth of write lanes on one database, 60 merges at once, each of
    its own key: every key is there afterwards, and so are the keys present before."""
    apis = [await start_api() for _ in range(3)]
    uuid = await make_instance(apis[0], {"before": "x"})
    path = f"/v1/instances/{uuid}/metadata"
    revision = apis[0].store.current_revision()

    async def set_key(index: int) -> None:
        body = {"metadata": {f"key{index}": f"value{index}"}}
        await apis[index % 3].ok("POST", path, json=body)

    await asyncio.gather(*(set_key(i) for i in range(60)))
    metadata = (await apis[1].ok("GET", f"/v1/instances/{uuid}"))["metadata"]
    assert metadata == {"before": "x", **{f"key{i}": f"value{i}" for i in range(60)}}
    assert apis[0].store.current_revision() == revision + 60


async def test_concurrent_sets_and_deletes_of_different_keys(start_api: ApiFactory) -> None:
    apis = [await start_api() for _ in range(2)]
    uuid = await make_instance(apis[0], {f"old{i}": "x" for i in range(20)})
    path = f"/v1/instances/{uuid}/metadata"

    async def change(index: int) -> None:
        api = apis[index % 2]
        await api.ok("POST", path, json={"metadata": {f"new{index}": "y"}})
        await api.ok("DELETE", path, params={"key": f"old{index}"})

    await asyncio.gather(*(change(i) for i in range(20)))
    metadata = (await apis[0].ok("GET", f"/v1/instances/{uuid}"))["metadata"]
    assert metadata == {f"new{i}": "y" for i in range(20)}
