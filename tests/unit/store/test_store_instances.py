"""Instances in the SQL store and the frozen snapshot the metadata API renders from."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from metastack.errors import Conflict, InvalidInput, NotFound
from metastack.metadata.model import BlockDevice, DeviceTag, HostRoute
from metastack.store.specs import (
    InstanceCreate,
    InstanceUpdate,
    NetworkCreate,
    PortCreate,
    SubnetCreate,
)
from metastack.store.sql import SqlStore

UUID = "2b0d6b1c-9c36-4f5e-8d64-3d7ad5d8e1f0"


def _net(store: SqlStore) -> str:
    network = store.create_network(NetworkCreate(name="n", project_id="p1", mtu=1400))
    store.create_subnet(
        SubnetCreate(
            network_id=network.id,
            cidr="10.0.0.0/24",
            dns_nameservers=["10.0.0.10"],
            host_routes=[{"destination": "10.8.0.0/16", "nexthop": "10.0.0.254"}],  # type: ignore[list-item]
        )
    )
    store.create_subnet(
        SubnetCreate(network_id=network.id, cidr="fd00::/64", ipv6_address_mode="slaac")
    )
    return network.id


def _spec(network_id: str, **fields: object) -> InstanceCreate:
    data: dict[str, object] = {
        "uuid": UUID,
        "name": "Web Server_1",
        "project_id": "p1",
        "user_id": "u1",
        "image_ref": "c1a2b3d4-0000-4000-8000-000000000001",
        "kernel_id": "k1",
        "user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
        "metadata": {"zeta": "1", "alpha": "ü", "mid": "x"},
        "key_name": "k",
        "public_key": "ssh-ed25519 AAAA test",
        "block_device_mapping": [{"device_name": "/dev/vdb", "source_type": "blank"}],
        "device_tags": [{"type": "nic", "bus": "pci", "tags": ["a"], "mac": "fa:16:3e:00:00:09"}],
        "dedicated_cpus": [2, 3],
        "networks": [
            {"network_id": network_id},
            {"network_id": network_id, "ip_address": "10.0.0.77"},
        ],
        **fields,
    }
    return InstanceCreate.model_validate(data)


def test_create_and_snapshot(sql_store: SqlStore) -> None:
    network_id = _net(sql_store)
    sql_store.create_port(PortCreate(network_id=network_id, device_owner="network:dhcp"))
    view = sql_store.create_instance(_spec(network_id))
    assert (view.uuid, view.hostname, view.ec2_id) == (UUID, "web-server-1", "i-00000001")
    assert view.reservation_id.startswith("r-") and len(view.ports) == 2
    assert list(view.metadata) == ["zeta", "alpha", "mid"]

    instance = sql_store.load_instance(UUID)
    assert instance is not None
    assert instance.user_data == b"#!/bin/sh\necho hi\n"
    assert instance.metadata == (("zeta", "1"), ("alpha", "ü"), ("mid", "x"))
    assert instance.image_ec2_id == 1 and instance.kernel_ec2_id == 2
    assert instance.block_device_mapping == (BlockDevice(device_name="/dev/vdb"),)
    assert instance.device_tags[0] == DeviceTag(
        type="nic", bus="pci", tags=("a",), mac="fa:16:3e:00:00:09"
    )
    assert instance.dedicated_cpus == (2, 3)
    first, second = instance.vifs
    assert [ip.ip_address for ip in second.port.fixed_ips] == ["10.0.0.77"]
    assert len(first.port.fixed_ips) == 2 and first.subnets[1].ip_version == 6
    assert first.network.mtu == 1400 and first.network_has_dhcp_port
    assert first.subnets[0].host_routes == (HostRoute("10.8.0.0/16", "10.0.0.254"),)
    assert instance.revision == sql_store.current_revision()
    assert sql_store.find_instances_by_ip("10.0.0.77") == [UUID]
    assert sql_store.find_instances_by_ip("10.0.0.200") == []


def test_same_image_same_ec2_id(sql_store: SqlStore) -> None:
    network_id = _net(sql_store)
    sql_store.create_instance(_spec(network_id, networks=[]))
    other = sql_store.create_instance(_spec(network_id, uuid=None, networks=[]))
    snapshot = sql_store.load_instance(other.uuid)
    assert snapshot is not None and (snapshot.ec2_id, snapshot.image_ec2_id) == (2, 1)


def test_duplicate_uuid_or_ip_writes_nothing(sql_store: SqlStore) -> None:
    network_id = _net(sql_store)
    sql_store.create_instance(_spec(network_id))
    before = sql_store.current_revision()
    with pytest.raises(Conflict, match="uuid"):
        sql_store.create_instance(_spec(network_id))
    with pytest.raises(Conflict, match=r"10\.0\.0\.77"):
        sql_store.create_instance(
            _spec(
                network_id,
                uuid=None,
                networks=[{"network_id": network_id, "ip_address": "10.0.0.77"}],
            )
        )
    assert sql_store.current_revision() == before
    assert len(sql_store.list_instances()) == 1 and len(sql_store.list_ports()) == 2


def test_update_bumps_revision(sql_store: SqlStore) -> None:
    view = sql_store.create_instance(_spec(_net(sql_store), networks=[]))
    updated = sql_store.update_instance(
        UUID, InstanceUpdate.model_validate({"metadata": {"b": "2"}, "user_data": None})
    )
    assert updated.metadata == {"b": "2"} and updated.user_data is None
    assert updated.revision > view.revision
    with pytest.raises(ValidationError, match="may not be null"):
        InstanceUpdate.model_validate({"name": None})


def test_password_set_once(sql_store: SqlStore) -> None:
    sql_store.create_instance(_spec(_net(sql_store), networks=[]))
    assert sql_store.set_password(UUID, "secret")
    revision = sql_store.current_revision()
    assert not sql_store.set_password(UUID, "other")
    assert sql_store.current_revision() == revision
    assert sql_store.get_password(UUID) == "secret"
    with pytest.raises(InvalidInput):
        sql_store.set_password(UUID, "x" * 1021)
    sql_store.clear_password(UUID)
    assert sql_store.set_password(UUID, "again")
    with pytest.raises(NotFound):
        sql_store.set_password("3b0d6b1c-9c36-4f5e-8d64-3d7ad5d8e1f0", "x")


def test_delete_removes_compute_ports(sql_store: SqlStore) -> None:
    network_id = _net(sql_store)
    sql_store.create_instance(_spec(network_id))
    sql_store.delete_instance(UUID)
    assert sql_store.load_instance(UUID) is None
    assert sql_store.list_ports() == []
    with pytest.raises(NotFound):
        sql_store.get_instance(UUID)


def test_attach_existing_port(sql_store: SqlStore) -> None:
    network_id = _net(sql_store)
    port = sql_store.create_port(PortCreate(network_id=network_id))
    view = sql_store.create_instance(_spec(network_id, networks=[{"port_id": port.id}]))
    assert view.ports == [port.id]
    assert sql_store.get_port(port.id).device_owner == "compute:nova"
    with pytest.raises(Conflict, match="in use"):
        sql_store.create_instance(_spec(network_id, uuid=None, networks=[{"port_id": port.id}]))


def test_user_data_limits() -> None:
    with pytest.raises(ValidationError, match="base64"):
        InstanceCreate.model_validate({"name": "a", "project_id": "p", "user_data": "%%%"})
    too_big = base64.b64encode(b"x" * 60000).decode()
    with pytest.raises(ValidationError, match="limit"):
        InstanceCreate.model_validate({"name": "a", "project_id": "p", "user_data": too_big})
    wrapped = "aGVs\nbG8="
    assert InstanceCreate.model_validate({"name": "a", "project_id": "p", "user_data": wrapped})
