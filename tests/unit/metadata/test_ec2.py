"""The EC2-compatible tree: keys, version gating, listings and quirks.

The contract: docs/wire-contracts.md#ec2-tree.
"""

from __future__ import annotations

import pytest

from metastack.metadata import MISSING, TEXT_PLAIN, Document
from metastack.metadata.model import BlockDevice

ALL_VERSIONS = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "latest",
]

# Keys and the first version that has them (kernel-id/ramdisk-id/public-keys need data).
SINCE = {
    "ami-id": "1.0",
    "ami-launch-index": "1.0",
    "ami-manifest-path": "1.0",
    "instance-id": "1.0",
    "hostname": "1.0",
    "local-ipv4": "1.0",
    "reservation-id": "1.0",
    "security-groups": "1.0",
    "public-keys": "1.0",
    "local-hostname": "2007-01-19",
    "public-hostname": "2007-01-19",
    "public-ipv4": "2007-01-19",
    "instance-type": "2007-08-29",
    "block-device-mapping": "2007-12-15",
    "kernel-id": "2007-12-15",
    "ramdisk-id": "2007-12-15",
    "placement": "2008-02-01",
    "instance-action": "2008-09-01",
}


def text(body: bytes) -> Document:
    return Document(TEXT_PLAIN, body)


@pytest.fixture
def full(make_instance, make_vif):
    return make_instance(
        key_name="mykey",
        public_key="ssh-rsa AAAA me@host",
        kernel_ec2_id=0x1F,
        ramdisk_ec2_id=0xABCDEF01,
        user_data=b"#!/bin/sh\necho hi\n",
        vifs=(make_vif(floating_ip="203.0.113.9"),),
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(("key", "since"), SINCE.items())
def test_key_gating(make_documents, full, version: str, key: str, since: str) -> None:
    docs = make_documents(full)
    effective = "2009-04-04" if version == "latest" else version
    present = ALL_VERSIONS.index(effective) >= ALL_VERSIONS.index(since)
    listing = docs.lookup(f"/{version}/meta-data/")
    assert isinstance(listing, Document)
    names = {line.rstrip("/") for line in listing.body.decode().split("\n")}
    names.discard("0=mykey")
    assert (key in names) == present
    assert (docs.lookup(f"/{version}/meta-data/{key}") is MISSING) == (not present)


def test_full_listing(make_documents, full) -> None:
    assert make_documents(full).lookup("/latest/meta-data/") == text(
        b"ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n"
        b"instance-action\ninstance-id\ninstance-type\nkernel-id\nlocal-hostname\nlocal-ipv4\n"
        b"placement/\npublic-hostname\npublic-ipv4\npublic-keys/\nramdisk-id\nreservation-id\n"
        b"security-groups"
    )


def test_oldest_listing(make_documents) -> None:
    assert make_documents().lookup("/1.0/meta-data") == text(
        b"ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\n"
        b"reservation-id\nsecurity-groups"
    )


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("ami-id", b"ami-00000010"),
        ("ami-launch-index", b"0"),
        ("ami-manifest-path", b"FIXME"),
        ("instance-id", b"i-0000002a"),
        ("hostname", b"web-1.novalocal"),
        ("local-hostname", b"web-1.novalocal"),
        ("public-hostname", b"web-1.novalocal"),
        ("local-ipv4", b"10.0.0.5"),
        ("public-ipv4", b"203.0.113.9"),
        ("reservation-id", b"r-0000abcd"),
        ("security-groups", b"default\nweb"),
        ("instance-type", b"m1.small"),
        ("kernel-id", b"aki-0000001f"),
        ("ramdisk-id", b"ari-abcdef01"),
        ("instance-action", b"none"),
        ("placement", b"availability-zone"),
        ("placement/availability-zone", b"nova"),
        ("public-keys", b"0=mykey"),
        ("public-keys/0", b"openssh-key"),
        ("public-keys/0/openssh-key", b"ssh-rsa AAAA me@host"),
        ("public-keys/0/_name", b"0=mykey"),
    ],
)
def test_values(make_documents, full, key: str, body: bytes) -> None:
    assert make_documents(full).lookup(f"/latest/meta-data/{key}") == text(body)


def test_version_directory(make_documents, make_instance, full) -> None:
    assert make_documents(full).lookup("/2009-04-04") == text(b"meta-data/\nuser-data")
    assert make_documents(make_instance()).lookup("/1.0/") == text(b"meta-data/")


def test_user_data(make_documents, full, make_instance) -> None:
    assert make_documents(full).lookup("/latest/user-data") == text(b"#!/bin/sh\necho hi\n")
    assert make_documents(full).lookup("/latest/user-data/") == text(b"#!/bin/sh\necho hi\n")
    assert make_documents(make_instance()).lookup("/latest/user-data") is MISSING
    empty = make_instance(user_data=b"")
    assert make_documents(empty).lookup("/1.0") == text(b"meta-data/\nuser-data")
    assert make_documents(empty).lookup("/1.0/user-data") == text(b"")


def test_none_rendering(make_documents, make_instance) -> None:
    docs = make_documents(make_instance(availability_zone=None, image_ec2_id=None))
    assert docs.lookup("/latest/meta-data/placement/availability-zone") == text(b"None")
    # Boot from volume: no image, so no EC2 image id.
    assert docs.lookup("/latest/meta-data/ami-id") == text(b"None")


def test_no_floating_ip_is_empty(make_documents, make_instance, make_vif) -> None:
    docs = make_documents(make_instance(vifs=(make_vif(),)))
    assert docs.lookup("/latest/meta-data/public-ipv4") == text(b"")


def test_first_floating_ip(make_documents, make_instance, make_vif) -> None:
    vifs = (
        make_vif(port_id="a"),
        make_vif(port_id="b", floating_ip="198.51.100.1"),
        make_vif(port_id="c", floating_ip="198.51.100.2"),
    )
    docs = make_documents(make_instance(vifs=vifs))
    assert docs.lookup("/latest/meta-data/public-ipv4") == text(b"198.51.100.1")


def test_hostname_without_domain(make_documents) -> None:
    docs = make_documents(dhcp_domain="")
    assert docs.lookup("/latest/meta-data/hostname") == text(b"web-1")
    docs = make_documents(dhcp_domain="example.org")
    assert docs.lookup("/latest/meta-data/local-hostname") == text(b"web-1.example.org")


def test_local_ipv4_falls_back_to_request_address(make_documents) -> None:
    docs = make_documents()
    fallback = Document(TEXT_PLAIN, b"10.9.8.7", cacheable=False)
    assert docs.lookup("/latest/meta-data/local-ipv4", "10.9.8.7") == fallback
    again = Document(TEXT_PLAIN, b"10.1.1.1", cacheable=False)
    assert docs.lookup("/latest/meta-data/local-ipv4", "10.1.1.1") == again
    assert docs.lookup("/latest/meta-data/local-ipv4") == Document(
        TEXT_PLAIN, b"None", cacheable=False
    )


def test_local_ipv4_odd_request_address(make_documents) -> None:
    result = make_documents().lookup("/latest/meta-data/local-ipv4", "a\udcff")
    assert result == Document(TEXT_PLAIN, b"a\\udcff", cacheable=False)


def test_local_ipv4_skips_ipv6(make_documents, make_instance, make_vif) -> None:
    v6 = make_vif(port_id="v6", address="2001:db8::5", cidr="2001:db8::/64", ip_version=6)
    v4 = make_vif(port_id="v4", address="192.168.7.7", cidr="192.168.7.0/24")
    docs = make_documents(make_instance(vifs=(v6, v4)))
    assert docs.lookup("/latest/meta-data/local-ipv4", "10.9.9.9") == text(b"192.168.7.7")


def test_no_security_groups(make_documents, make_instance) -> None:
    docs = make_documents(make_instance(security_groups=()))
    assert docs.lookup("/latest/meta-data/security-groups") == text(b"")


def test_unicode_security_group(make_documents, make_instance) -> None:
    docs = make_documents(make_instance(security_groups=("grüne",)))
    assert docs.lookup("/latest/meta-data/security-groups") == text("grüne".encode())


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/hostname/x",
        "/latest/meta-data/hostname/x/y",
        "/latest/meta-data/security-groups/default",
        "/latest/meta-data/security-groups/0",
        "/latest/meta-data/ami-launch-index/0",
        "/latest/meta-data/placement/availability-zone/x",
        "/latest/meta-data/public-keys/0/openssh-key/x",
        "/latest/meta-data/public-keys/1",
        "/latest/user-data/x",
        "/latest/meta-data/nope",
        "/latest/dynamic",
    ],
)
def test_child_of_leaf_is_missing(make_documents, full, path: str) -> None:
    assert make_documents(full).lookup(path) is MISSING


def test_no_key_no_public_keys(make_documents) -> None:
    assert make_documents().lookup("/latest/meta-data/public-keys") is MISSING


def test_default_block_device_mapping(make_documents, make_instance) -> None:
    docs = make_documents(make_instance(root_device_name=None))
    bdm = "/latest/meta-data/block-device-mapping"
    assert docs.lookup(bdm) == text(b"ami\nephemeral0\nroot\nswap")
    assert docs.lookup(bdm + "/ami") == text(b"sda1")
    assert docs.lookup(bdm + "/ephemeral0") == text(b"sda2")
    assert docs.lookup(bdm + "/root") == text(b"/dev/sda1")
    assert docs.lookup(bdm + "/swap") == text(b"sda3")


def test_block_device_mapping(make_documents, make_instance) -> None:
    instance = make_instance(
        root_device_name="/dev/vda",
        default_ephemeral_device="/dev/vdb",
        default_swap_device="/dev/vdc",
        block_device_mapping=(
            BlockDevice("/dev/vda", source_type="image", destination_type="local", boot_index=0),
            BlockDevice("/dev/vdz", source_type="volume", destination_type="volume"),
            BlockDevice("/dev/vdy", source_type="snapshot", destination_type="volume"),
            BlockDevice("/dev/vdd", source_type="blank", guest_format="swap"),
            BlockDevice("/dev/vde", source_type="blank"),
            BlockDevice("/dev/vdf", source_type="blank", guest_format="ext4"),
        ),
    )
    docs = make_documents(instance)
    bdm = "/latest/meta-data/block-device-mapping/"
    assert docs.lookup(bdm) == text(b"ami\nebs0\nebs1\nephemeral0\nephemeral1\nroot\nswap")
    expected = {
        "ami": b"vda",
        "root": b"/dev/vda",
        "ebs0": b"/dev/vdy",
        "ebs1": b"/dev/vdz",
        "swap": b"/dev/vdd",
        "ephemeral0": b"/dev/vde",
        "ephemeral1": b"/dev/vdf",
    }
    for key, body in expected.items():
        assert docs.lookup(bdm + key) == text(body), key


def test_block_device_defaults_without_bdms(make_documents, make_instance) -> None:
    instance = make_instance(
        root_device_name="/dev/sda", default_ephemeral_device="/dev/sdb", default_swap_device=None
    )
    docs = make_documents(instance)
    bdm = "/latest/meta-data/block-device-mapping/"
    assert docs.lookup(bdm) == text(b"ami\nephemeral0\nroot")
    assert docs.lookup(bdm + "ami") == text(b"sda")
    assert docs.lookup(bdm + "ephemeral0") == text(b"/dev/sdb")


def test_ec2_content_type_everywhere(make_documents, full) -> None:
    docs = make_documents(full)
    for path in (
        "/",
        "/latest",
        "/latest/meta-data",
        "/latest/user-data",
        "/latest/meta-data/ami-id",
    ):
        result = docs.lookup(path)
        assert isinstance(result, Document)
        assert result.content_type == "text/plain; charset=UTF-8"
        assert not result.needs_seed
