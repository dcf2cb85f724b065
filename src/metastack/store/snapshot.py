"""Build the frozen `Instance` snapshot the metadata API renders from, in four queries."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from metastack.metadata.model import (
    BlockDevice,
    DeviceTag,
    FixedIp,
    HostRoute,
    Instance,
    Network,
    Port,
    Subnet,
    Vif,
)
from metastack.store.fields import decode_user_data
from metastack.store.ports import DHCP
from metastack.store.schema import FixedIpRow, InstanceRow, NetworkRow, PortRow, SubnetRow


def _subnet(row: SubnetRow) -> Subnet:
    return Subnet(
        id=row.id,
        network_id=row.network_id,
        cidr=row.cidr,
        ip_version=row.ip_version,
        gateway_ip=row.gateway_ip,
        dns_nameservers=tuple(row.dns_nameservers),
        host_routes=tuple(HostRoute(r["destination"], r["nexthop"]) for r in row.host_routes),
        enable_dhcp=row.enable_dhcp,
        ipv6_address_mode=cast(Any, row.ipv6_address_mode),
    )


def _vifs(session: Session, instance_uuid: str) -> tuple[Vif, ...]:
    pairs = session.execute(
        select(PortRow, NetworkRow)
        .join(NetworkRow, NetworkRow.id == PortRow.network_id)
        .where(PortRow.device_id == instance_uuid, ~PortRow.device_owner.startswith("network:"))
        .order_by(PortRow.created_revision)
    ).all()
    if not pairs:
        return ()
    port_ids = [port.id for port, _ in pairs]
    fixed: dict[str, list[tuple[FixedIpRow, SubnetRow]]] = {port_id: [] for port_id in port_ids}
    for ip_row, subnet_row in session.execute(
        select(FixedIpRow, SubnetRow)
        .join(SubnetRow, SubnetRow.id == FixedIpRow.subnet_id)
        .where(FixedIpRow.port_id.in_(port_ids))
        .order_by(FixedIpRow.port_id, FixedIpRow.position)
    ).all():
        fixed[ip_row.port_id].append((ip_row, subnet_row))
    network_ids = list({network.id for _, network in pairs})
    with_dhcp = set(
        session.scalars(
            select(PortRow.network_id)
            .where(PortRow.network_id.in_(network_ids), PortRow.device_owner == DHCP)
            .distinct()
        )
    )
    vifs = []
    for port_row, network_row in pairs:
        port = Port(
            id=port_row.id,
            network_id=port_row.network_id,
            project_id=port_row.project_id,
            mac_address=port_row.mac_address,
            fixed_ips=tuple(FixedIp(ip.subnet_id, ip.ip_address) for ip, _ in fixed[port_row.id]),
            device_id=port_row.device_id,
            device_owner=port_row.device_owner,
            floating_ip=port_row.floating_ip,
            vif_type=port_row.vif_type,
            device_name=port_row.device_name,
        )
        network = Network(
            id=network_row.id,
            name=network_row.name,
            project_id=network_row.project_id,
            mtu=network_row.mtu,
        )
        subnets = tuple(_subnet(subnet) for _, subnet in fixed[port_row.id])
        vifs.append(Vif(port, network, subnets, network_row.id in with_dhcp))
    return tuple(vifs)


def _device_tag(data: dict[str, Any]) -> DeviceTag:
    return DeviceTag(**{**data, "tags": tuple(data.get("tags", ()))})


def load_instance(session: Session, instance_uuid: str) -> Instance | None:
    """The complete snapshot of one instance, or None if there is no such instance."""
    row = session.scalar(select(InstanceRow).where(InstanceRow.uuid == instance_uuid))
    if row is None:
        return None
    return Instance(
        uuid=row.uuid,
        ec2_id=row.id,
        name=row.name,
        hostname=row.hostname,
        project_id=row.project_id,
        user_id=row.user_id,
        availability_zone=row.availability_zone,
        launch_index=row.launch_index,
        reservation_id=row.reservation_id,
        image_ref=row.image_ref,
        image_ec2_id=row.image_ec2_id,
        kernel_id=row.kernel_id,
        kernel_ec2_id=row.kernel_ec2_id,
        ramdisk_id=row.ramdisk_id,
        ramdisk_ec2_id=row.ramdisk_ec2_id,
        flavor_name=row.flavor_name,
        root_device_name=row.root_device_name,
        default_ephemeral_device=row.default_ephemeral_device,
        default_swap_device=row.default_swap_device,
        block_device_mapping=tuple(BlockDevice(**bdm) for bdm in row.block_device_mapping),
        key_name=row.key_name,
        key_type=cast(Any, row.key_type),
        public_key=row.public_key,
        user_data=None if row.user_data is None else decode_user_data(row.user_data),
        metadata=tuple((key, value) for key, value in row.metadata_items),
        security_groups=tuple(row.security_groups),
        device_tags=tuple(_device_tag(tag) for tag in row.device_tags),
        dedicated_cpus=tuple(row.dedicated_cpus),
        password=row.password,
        vifs=_vifs(session, row.uuid),
        revision=row.revision,
        boot_roles=row.boot_roles,
    )
