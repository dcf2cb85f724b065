"""Path normalisation, tree selection and the EC2 version list.

The contract: docs/wire-contracts.md#dispatch and docs/wire-contracts.md#paths.
"""

from __future__ import annotations

import pytest

from metastack.metadata import (
    EC2_VERSION_LIST,
    MISSING,
    TEXT_PLAIN,
    Document,
    is_version_root,
    normalize_path,
)

VERSION_LIST = (
    b"1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n"
    b"2008-02-01\n2008-09-01\n2009-04-04\nlatest"
)


def test_ec2_version_list_bytes() -> None:
    assert EC2_VERSION_LIST == VERSION_LIST


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("", "/"),
        ("/", "/"),
        ("latest", "/latest"),
        ("/latest/meta-data/", "/latest/meta-data"),
        ("/latest//meta-data", "/latest/meta-data"),
        ("/latest/./meta-data/../user-data", "/latest/user-data"),
        ("/..", "/"),
        ("//latest", "//latest"),
        ("///latest", "/latest"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize("path", ["/", "/foo/..", "/./", "///"])
def test_version_root(path: str) -> None:
    assert is_version_root(path)


@pytest.mark.parametrize("path", ["//", "/ec2", "/latest", ""])
def test_not_version_root(path: str) -> None:
    # "//" survives normpath; "" normalises to "." there. Both still get the list from lookup.
    assert not is_version_root(path)


@pytest.mark.parametrize("path", ["", "/", "//", "/ec2", "/ec2/", "//latest/meta-data", "/x/.."])
def test_version_list_paths(make_documents, path: str) -> None:
    assert make_documents().lookup(path) == Document(TEXT_PLAIN, VERSION_LIST)


def test_non_tree_first_token_is_ec2(make_documents) -> None:
    docs = make_documents()
    assert docs.lookup("/latest/meta-data/hostname") == docs.lookup(
        "/ec2/latest/meta-data/hostname"
    )
    assert docs.lookup("latest/meta-data/hostname") == docs.lookup("/ec2/latest/meta-data/hostname")
    assert docs.lookup("/bogus") is MISSING
    assert docs.lookup("/ec2/bogus/meta-data") is MISSING


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data",
        "/latest/meta-data/hostname",
        "/latest/meta-data/placement/availability-zone",
        "/openstack",
        "/openstack/latest",
        "/openstack/latest/meta_data.json",
        "/openstack/2013-04-04/network_data.json",
    ],
)
def test_trailing_slash_is_the_same(make_documents, path: str) -> None:
    docs = make_documents()
    assert docs.lookup(path + "/") == docs.lookup(path)
    assert docs.lookup(path + "//") == docs.lookup(path)


def test_repeated_lookup_returns_the_memoized_object(make_documents) -> None:
    docs = make_documents()
    first = docs.lookup("/openstack/latest/meta_data.json")
    assert docs.lookup("/openstack/latest/meta_data.json") is first
    assert docs.lookup("/openstack/latest/meta_data.json/") is first


def test_memo_is_bounded(make_documents) -> None:
    docs = make_documents()
    for n in range(10_000):
        assert docs.lookup(f"/latest/meta-data/x{n}") is MISSING
    assert docs.lookup("/" + "a" * 100_000) is MISSING
