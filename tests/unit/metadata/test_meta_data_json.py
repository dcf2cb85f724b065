"""meta_data.json byte for byte: key order, per-version keys and devices.

The contract: docs/wire-contracts.md#openstack-meta-data.
"""

from __future__ import annotations

import pytest

from metastack.metadata import Document
from metastack.metadata.model import DeviceTag

UUID = "6f0c3d0e-1b7a-4c5e-9d4f-2a1b3c4d5e6f"
HEAD = (
    '{"uuid": "' + UUID + '", "meta": {"role": "db", "note": "\\u00fcn\\u00ef \\ud83d\\ude00"}, '
    '"public_keys": {"mykey": "ssh-rsa AAAA me@host"}, '
    '"keys": [{"name": "mykey", "type": "ssh", "data": "ssh-rsa AAAA me@host"}], '
    '"hostname": "web-1.novalocal", "name": "web-1", "launch_index": 0, '
    '"availability_zone": "nova"'
)
SEED = ', "random_seed": "SEED"'

NIC_TAGGED = DeviceTag(
    type="nic",
    bus="pci",
    address="0000:00:02.0",
    mac="fa:16:3e:00:00:01",
    tags=("nfv",),
    vlan=100,
    vf_trusted=True,
)
NIC_PLAIN = DeviceTag(type="nic", mac="fa:16:3e:00:00:02")
DISK_TAGGED = DeviceTag(
    type="disk", bus="scsi", address="0:0:0:1", serial="vol-1", path="/dev/sdb", tags=("db",)
)
DISK_PLAIN = DeviceTag(type="disk")
SHARE = DeviceTag(type="share", share_id="sh-1", tag="data")
DEVICES = (NIC_TAGGED, NIC_PLAIN, DISK_TAGGED, DISK_PLAIN, SHARE)

NIC1 = (
    '"type": "nic", "mac": "fa:16:3e:00:00:01", "bus": "pci", "address": "0000:00:02.0", '
    '"tags": ["nfv"]}'
)
DISK1 = (
    '{"type": "disk", "serial": "vol-1", "path": "/dev/sdb", "bus": "scsi", "address": "0:0:0:1", '
    '"tags": ["db"]}'
)
DISK2 = '{"type": "disk", "bus": "none", "address": "none"}'
NIC2 = (
    '{"vf_trusted": false, "type": "nic", "mac": "fa:16:3e:00:00:02", "bus": "none", '
    '"address": "none"}'
)
SHARE1 = '{"type": "share", "share_id": "sh-1", "tag": "data", "bus": "none", "address": "none"}'
PROJECT = ', "project_id": "proj-a"'
NEWTON = "[{" + ", ".join([NIC1, DISK1, DISK2]) + "]"
OCATA = '[{"vlan": 100, ' + ", ".join([NIC1, DISK1, DISK2]) + "]"
ROCKY = '[{"vlan": 100, "vf_trusted": true, ' + ", ".join([NIC1, NIC2, DISK1, DISK2]) + "]"
EPOXY = '[{"vlan": 100, "vf_trusted": true, ' + ", ".join([NIC1, NIC2, DISK1, DISK2, SHARE1]) + "]"
CPUS = ', "dedicated_cpus": [2, 3, 7]'

EXPECTED = {
    "2012-08-10": HEAD + "}",
    "2013-04-04": HEAD + SEED + "}",
    "2013-10-17": HEAD + SEED + "}",
    "2015-10-15": HEAD + SEED + PROJECT + "}",
    "2016-06-30": HEAD + SEED + PROJECT + ', "devices": ' + NEWTON + "}",
    "2016-10-06": HEAD + SEED + PROJECT + ', "devices": ' + NEWTON + "}",
    "2017-02-22": HEAD + SEED + PROJECT + ', "devices": ' + OCATA + "}",
    "2018-08-27": HEAD + SEED + PROJECT + ', "devices": ' + ROCKY + "}",
    "2020-10-14": HEAD + SEED + PROJECT + ', "devices": ' + ROCKY + CPUS + "}",
    "2025-04-04": HEAD + SEED + PROJECT + ', "devices": ' + EPOXY + CPUS + "}",
}
EXPECTED["latest"] = EXPECTED["2025-04-04"]


@pytest.fixture
def instance(make_instance):
    return make_instance(
        metadata=(("role", "db"), ("note", "ünï 😀")),
        key_name="mykey",
        public_key="ssh-rsa AAAA me@host",
        device_tags=DEVICES,
        dedicated_cpus=(7, 2, 3),
    )


@pytest.mark.parametrize(("version", "expected"), EXPECTED.items())
def test_meta_data_json_bytes(make_documents, instance, version: str, expected: str) -> None:
    doc = make_documents(instance).lookup(f"/openstack/{version}/meta_data.json")
    assert isinstance(doc, Document)
    assert doc.content_type == "application/json"
    assert doc.materialize(b"SEED") == expected.encode("ascii")


def test_minimal_meta_data_json(make_documents, make_instance) -> None:
    instance = make_instance(availability_zone=None, launch_index=3)
    doc = make_documents(instance, dhcp_domain="").lookup("/openstack/2012-08-10/meta_data.json")
    assert doc == Document(
        "application/json",
        b'{"uuid": "' + UUID.encode() + b'", "hostname": "web-1", "name": "web-1", '
        b'"launch_index": 3, "availability_zone": null}',
    )


def test_no_devices_is_an_empty_list(make_documents, make_instance) -> None:
    doc = make_documents(make_instance()).lookup("/openstack/2016-06-30/meta_data.json")
    assert isinstance(doc, Document)
    assert doc.materialize(b"S").endswith(
        b'"random_seed": "S", "project_id": "proj-a", "devices": []}'
    )


def test_key_name_without_keypair_omits_keys(make_documents, make_instance) -> None:
    doc = make_documents(make_instance(key_name="gone")).lookup(
        "/openstack/2012-08-10/meta_data.json"
    )
    assert isinstance(doc, Document)
    assert b"public_keys" not in doc.body
    assert b'"keys"' not in doc.body


def test_x509_key_type(make_documents, make_instance) -> None:
    instance = make_instance(key_name="k", key_type="x509", public_key="CERT")
    doc = make_documents(instance).lookup("/openstack/2012-08-10/meta_data.json")
    assert isinstance(doc, Document)
    assert b'"keys": [{"name": "k", "type": "x509", "data": "CERT"}]' in doc.body


def test_nic_with_only_tags_before_ocata(make_documents, make_instance) -> None:
    untagged = DeviceTag(type="nic", mac="aa:bb:cc:dd:ee:ff", vlan=5, bus="usb", address="1")
    doc = make_documents(make_instance(device_tags=(untagged,))).lookup(
        "/openstack/2016-10-06/meta_data.json"
    )
    assert isinstance(doc, Document)
    assert doc.materialize(b"S").endswith(b'"devices": []}')
    doc = make_documents(make_instance(device_tags=(untagged,))).lookup(
        "/openstack/2017-02-22/meta_data.json"
    )
    assert isinstance(doc, Document)
    assert doc.materialize(b"S").endswith(
        b'"devices": [{"vlan": 5, "type": "nic", "mac": "aa:bb:cc:dd:ee:ff", "bus": "usb", '
        b'"address": "1"}]}'
    )
