"""The OpenStack tree: versions, listings, files and their gating.

The contract: docs/wire-contracts.md#openstack-tree and
docs/wire-contracts.md#content-types.
"""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from metastack.metadata import (
    MISSING,
    SEED_PLACEHOLDER,
    Document,
    PasswordFile,
    VendorData2,
)

OS_VERSIONS = [
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
    "2025-04-04",
]
TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


def at_least(version: str, since: str) -> bool:
    effective = OS_VERSIONS[-1] if version == "latest" else version
    return OS_VERSIONS.index(effective) >= OS_VERSIONS.index(since)


@pytest.mark.parametrize(
    ("today", "body"),
    [
        (
            datetime.date(2026, 1, 1),
            b"2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n"
            b"2017-02-22\n2018-08-27\n2020-10-14\n2025-04-04\nlatest",
        ),
        (
            datetime.date(2025, 4, 4),
            b"2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n"
            b"2017-02-22\n2018-08-27\n2020-10-14\n2025-04-04\nlatest",
        ),
        (
            datetime.date(2025, 4, 3),
            b"2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n"
            b"2017-02-22\n2018-08-27\n2020-10-14\nlatest",
        ),
        (datetime.date(2012, 1, 1), b"latest"),
    ],
)
def test_version_list_gated_by_date(make_documents, today: datetime.date, body: bytes) -> None:
    docs = make_documents(today=today)
    assert docs.lookup("/openstack") == Document(TEXT, body)
    assert docs.lookup("/openstack/") == Document(TEXT, body)


def test_future_version_still_served(make_documents) -> None:
    docs = make_documents(today=datetime.date(2020, 1, 1))
    result = docs.lookup("/openstack/2025-04-04/meta_data.json")
    assert isinstance(result, Document)
    assert result.content_type == JSON


def test_unknown_version_and_content(make_documents) -> None:
    docs = make_documents()
    for path in (
        "/openstack/2099-01-01",
        "/openstack/2099-01-01/meta_data.json",
        "/openstack/content",
        "/openstack/content/0000",
        "/openstack/latest/content",
        "/openstack/latest/content/0000",
        "/openstack/latest/nope",
        "/openstack/latest/meta_data.json/uuid",
        "/openstack/latest/version/x",
    ):
        assert docs.lookup(path) is MISSING, path


@pytest.mark.parametrize(
    ("version", "body"),
    [
        ("2012-08-10", b"meta_data.json\nuser_data"),
        ("2013-04-04", b"meta_data.json\nuser_data\npassword"),
        ("2013-10-17", b"meta_data.json\nuser_data\npassword\nvendor_data.json"),
        (
            "2015-10-15",
            b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json",
        ),
        (
            "2016-10-06",
            b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\n"
            b"vendor_data2.json",
        ),
        (
            "latest",
            b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\n"
            b"vendor_data2.json",
        ),
    ],
)
def test_version_listing(make_documents, make_instance, version: str, body: bytes) -> None:
    docs = make_documents(make_instance(user_data=b"x"))
    assert docs.lookup(f"/openstack/{version}") == Document(TEXT, body)
    assert docs.lookup(f"/openstack/{version}/version") == Document(TEXT, body)


def test_version_listing_without_user_data(make_documents) -> None:
    assert make_documents().lookup("/openstack/2012-08-10") == Document(TEXT, b"meta_data.json")


@pytest.mark.parametrize("version", [*OS_VERSIONS, "latest"])
def test_files_served_when(make_documents, make_instance, make_vif, version: str) -> None:
    instance = make_instance(user_data=b"\x00\xffraw", password="secret", vifs=(make_vif(),))
    docs = make_documents(instance, vendordata_static={"cloud-init": "#cloud-config\n"})
    base = f"/openstack/{version}/"

    assert docs.lookup(base + "user_data") == Document(TEXT, b"\x00\xffraw")

    network = docs.lookup(base + "network_data.json")
    assert isinstance(network, Document)
    assert network.content_type == TEXT  # nova never switches the type for this file

    password = docs.lookup(base + "password")
    if at_least(version, "2013-04-04"):
        assert password == PasswordFile("secret")
        assert isinstance(password, PasswordFile)
        assert password.content_type == "text/html; charset=UTF-8"
    else:
        assert password is MISSING

    vendor = docs.lookup(base + "vendor_data.json")
    if at_least(version, "2013-10-17"):
        assert vendor == Document(JSON, b'{"cloud-init": "#cloud-config\\n"}')
    else:
        assert vendor is MISSING

    vendor2 = docs.lookup(base + "vendor_data2.json")
    if at_least(version, "2016-10-06"):
        assert vendor2 == VendorData2({"cloud-init": "#cloud-config\n"})
    else:
        assert vendor2 is MISSING


def test_user_data_missing(make_documents) -> None:
    assert make_documents().lookup("/openstack/latest/user_data") is MISSING


def test_vendordata_static_disabled(make_documents) -> None:
    docs = make_documents(vendordata_static={"a": 1}, static_vendordata_enabled=False)
    assert docs.lookup("/openstack/latest/vendor_data.json") is MISSING
    assert docs.lookup("/openstack/latest/vendor_data2.json") == VendorData2(None)


def test_vendordata_static_not_configured(make_documents) -> None:
    docs = make_documents()
    assert docs.lookup("/openstack/latest/vendor_data.json") == Document(JSON, b"{}")
    assert docs.lookup("/openstack/latest/vendor_data2.json") == VendorData2({})


def test_empty_password_is_still_a_password_file(make_documents) -> None:
    assert make_documents().lookup("/openstack/latest/password") == PasswordFile("")


def test_network_data_without_vifs(make_documents) -> None:
    docs = make_documents()
    assert docs.lookup("/openstack/2012-08-10/network_data.json") == Document(TEXT, b"{}")


def test_latest_is_the_last_version(make_documents, make_instance) -> None:
    docs = make_documents(make_instance(user_data=b"x"))
    for name in ("", "/meta_data.json", "/network_data.json", "/vendor_data.json"):
        assert docs.lookup(f"/openstack/latest{name}") == docs.lookup(
            f"/openstack/2025-04-04{name}"
        )


def test_seed_placeholder(make_documents) -> None:
    docs = make_documents()
    old = docs.lookup("/openstack/2012-08-10/meta_data.json")
    assert isinstance(old, Document)
    assert not old.needs_seed
    assert SEED_PLACEHOLDER not in old.body
    assert "random_seed" not in json.loads(old.body)

    for version in OS_VERSIONS[1:]:
        doc = docs.lookup(f"/openstack/{version}/meta_data.json")
        assert isinstance(doc, Document)
        assert doc.needs_seed
        assert doc.body.count(SEED_PLACEHOLDER) == 1
        seed = base64.b64encode(bytes(range(256)) * 2)
        parsed = json.loads(doc.materialize(seed))
        assert base64.b64decode(parsed["random_seed"]) == bytes(range(256)) * 2
        # The spliced body is exactly what json.dumps gives for the whole object.
        assert doc.materialize(seed) == json.dumps(parsed).encode()


def test_seed_placeholder_not_forged_by_user_metadata(make_documents, make_instance) -> None:
    instance = make_instance(metadata=(("random_seed", SEED_PLACEHOLDER.decode()),))
    doc = make_documents(instance).lookup("/openstack/latest/meta_data.json")
    assert isinstance(doc, Document)
    assert doc.body.count(SEED_PLACEHOLDER) == 1
    parsed = json.loads(doc.materialize(b"SEED"))
    assert parsed["random_seed"] == "SEED"
    assert parsed["meta"] == {"random_seed": "\x00random_seed\x00"}


def test_materialize_without_seed_is_the_body(make_documents) -> None:
    doc = make_documents().lookup("/latest/meta-data/hostname")
    assert isinstance(doc, Document)
    assert doc.materialize(b"ignored") is doc.body
