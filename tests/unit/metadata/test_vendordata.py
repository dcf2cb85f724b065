"""vendor_data2.json merging and the dynamic vendordata request body.

The contract: docs/wire-contracts.md#vendor-data.
"""

from __future__ import annotations

from metastack.metadata import render_vendor_data2, vendordata_request_body


def test_static_and_dynamic() -> None:
    body = render_vendor_data2({"cloud-init": "x"}, {"svc": {"a": 1}, "other": {}})
    assert body == b'{"static": {"cloud-init": "x"}, "svc": {"a": 1}, "other": {}}'


def test_static_disabled() -> None:
    assert render_vendor_data2(None, {"svc": [1, "ü"]}) == b'{"svc": [1, "\\u00fc"]}'
    assert render_vendor_data2(None, {}) == b"{}"


def test_dynamic_name_colliding_with_static_is_dropped() -> None:
    assert render_vendor_data2({}, {"static": {"evil": 1}, "ok": 2}) == b'{"static": {}, "ok": 2}'


def test_request_body(make_instance) -> None:
    instance = make_instance(
        user_data=b"#cloud-config\n",
        metadata=(("k", "v"),),
        boot_roles="member,reader",
    )
    assert vendordata_request_body(instance) == {
        "project-id": "proj-a",
        "instance-id": "6f0c3d0e-1b7a-4c5e-9d4f-2a1b3c4d5e6f",
        "image-id": "img-uuid",
        "user-data": "I2Nsb3VkLWNvbmZpZwo=",
        "hostname": "web-1",
        "metadata": {"k": "v"},
        "boot-roles": "member,reader",
    }


def test_request_body_without_user_data(make_instance) -> None:
    body = vendordata_request_body(make_instance(image_ref=None))
    assert body["user-data"] is None
    assert body["image-id"] is None
    assert body["metadata"] == {}
    assert body["boot-roles"] == ""
