"""Fixture factory for Instance snapshots used by the metadata renderer tests."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from metastack.metadata import Documents, RenderOptions, build_documents
from metastack.metadata.model import FixedIp, Instance, Network, Port, Subnet, Vif

TODAY = datetime.date(2026, 1, 1)

MakeInstance = Callable[..., Instance]
MakeDocuments = Callable[..., Documents]
MakeVif = Callable[..., Vif]


def plain_instance(**changes: Any) -> Instance:
    """A small instance: no network, no key, no user data, unless `changes` add them."""
    base = Instance(
        uuid="6f0c3d0e-1b7a-4c5e-9d4f-2a1b3c4d5e6f",
        ec2_id=0x2A,
        name="web-1",
        hostname="web-1",
        project_id="proj-a",
        availability_zone="nova",
        reservation_id="r-0000abcd",
        image_ref="img-uuid",
        image_ec2_id=0x10,
        flavor_name="m1.small",
        root_device_name="/dev/vda",
        security_groups=("default", "web"),
    )
    return replace(base, **changes)


def simple_vif(
    *,
    port_id: str = "port-1",
    address: str = "10.0.0.5",
    cidr: str = "10.0.0.0/24",
    gateway: str | None = "10.0.0.1",
    enable_dhcp: bool = True,
    dhcp_port: bool = False,
    floating_ip: str | None = None,
    mac: str = "FA:16:3E:00:00:01",
    ip_version: int = 4,
    **subnet_changes: Any,
) -> Vif:
    """A VIF with one subnet (IPv4 unless told) and one fixed address on it."""
    subnet = Subnet(
        id=f"subnet-{port_id}",
        network_id=f"net-{port_id}",
        cidr=cidr,
        ip_version=ip_version,
        gateway_ip=gateway,
        enable_dhcp=enable_dhcp,
        **subnet_changes,
    )
    port = Port(
        id=port_id,
        network_id=subnet.network_id,
        project_id="proj-a",
        mac_address=mac,
        fixed_ips=(FixedIp(subnet.id, address),),
        floating_ip=floating_ip,
        vif_type="ovs",
        device_name=f"tap{port_id}",
    )
    network = Network(id=subnet.network_id, name="private", project_id="proj-a", mtu=1450)
    return Vif(port=port, network=network, subnets=(subnet,), network_has_dhcp_port=dhcp_port)


@pytest.fixture
def make_instance() -> MakeInstance:
    return plain_instance


@pytest.fixture
def make_vif() -> MakeVif:
    return simple_vif


@pytest.fixture
def make_documents() -> MakeDocuments:
    def make(instance: Instance | None = None, **options: Any) -> Documents:
        options.setdefault("today", TODAY)
        return build_documents(instance or plain_instance(), RenderOptions(**options))

    return make
