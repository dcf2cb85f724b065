"""Instances: create (with their NICs), read, update, delete, EC2 ids and the guest password."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from metastack.errors import Conflict, InvalidInput, NotFound
from metastack.store.ipam import generate_reservation_id, sanitize_hostname
from metastack.store.ports import create_port, delete_port, instance_of
from metastack.store.schema import ImageIdRow, InstanceRow, PortRow, utcnow
from metastack.store.specs import (
    MAX_METADATA_ITEMS,
    FixedIpSpec,
    InstanceCreate,
    InstanceUpdate,
    PortCreate,
)
from metastack.store.tx import Tx
from metastack.store.views import InstanceView

MAX_PASSWORD_LENGTH = 1020  # nova: 4 chunks of 255 characters in system metadata
_IMAGE_FIELDS = {
    "image_ref": "image_ec2_id",
    "kernel_id": "kernel_ec2_id",
    "ramdisk_id": "ramdisk_ec2_id",
}


def ec2_image_id(session: Session, image_uuid: str | None) -> int | None:
    """The EC2 integer of an image/kernel/ramdisk id, allocated on first use."""
    if not image_uuid:
        return None
    found = session.scalar(select(ImageIdRow.id).where(ImageIdRow.uuid == image_uuid))
    if found is None:
        found = session.execute(
            insert(ImageIdRow).values(uuid=image_uuid).returning(ImageIdRow.id)
        ).scalar_one()
    return found


def get_instance_row(session: Session, instance_uuid: str) -> InstanceRow:
    """The instance row with this uuid, or NotFound."""
    row = session.scalar(select(InstanceRow).where(InstanceRow.uuid == instance_uuid))
    if row is None:
        raise NotFound(f"instance {instance_uuid} not found")
    return row


def instance_views(session: Session, rows: Sequence[InstanceRow]) -> list[InstanceView]:
    """API views of instances with their port ids (one query for all)."""
    ports: dict[str, list[str]] = {row.uuid: [] for row in rows}
    if rows:
        query = (
            select(PortRow.device_id, PortRow.id)
            .where(PortRow.device_id.in_(list(ports)), ~PortRow.device_owner.startswith("network:"))
            .order_by(PortRow.created_revision)
        )
        for device_id, port_id in session.execute(query):
            ports[device_id].append(port_id)
    return [_view(row, ports[row.uuid]) for row in rows]


def _view(row: InstanceRow, ports: list[str]) -> InstanceView:
    return InstanceView.model_validate(
        {
            "uuid": row.uuid,
            "ec2_id": f"i-{row.id:08x}",
            "name": row.name,
            "hostname": row.hostname,
            "project_id": row.project_id,
            "user_id": row.user_id,
            "availability_zone": row.availability_zone,
            "launch_index": row.launch_index,
            "reservation_id": row.reservation_id,
            "image_ref": row.image_ref,
            "kernel_id": row.kernel_id,
            "ramdisk_id": row.ramdisk_id,
            "flavor_name": row.flavor_name,
            "root_device_name": row.root_device_name,
            "default_ephemeral_device": row.default_ephemeral_device,
            "default_swap_device": row.default_swap_device,
            "block_device_mapping": row.block_device_mapping,
            "key_name": row.key_name,
            "key_type": row.key_type,
            "public_key": row.public_key,
            "user_data": row.user_data,
            "metadata": dict(row.metadata_items),
            "security_groups": row.security_groups,
            "device_tags": row.device_tags,
            "dedicated_cpus": row.dedicated_cpus,
            "boot_roles": row.boot_roles,
            "password_set": bool(row.password),
            "ports": ports,
            "revision": row.revision,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


def list_instances(
    session: Session, *, project_id: str | None = None, name: str | None = None
) -> list[InstanceView]:
    """Instances, oldest first, filtered by project and name."""
    query = select(InstanceRow).order_by(InstanceRow.id)
    if project_id is not None:
        query = query.where(InstanceRow.project_id == project_id)
    if name is not None:
        query = query.where(InstanceRow.name == name)
    return instance_views(session, session.scalars(query).all())


def _column_values(changes: dict[str, Any]) -> dict[str, Any]:
    """Spec fields -> column values (metadata keeps its order as a list of pairs)."""
    values = dict(changes)
    if "metadata" in values:
        values["metadata_items"] = [[key, value] for key, value in values.pop("metadata").items()]
    return values


DEFAULT_AVAILABILITY_ZONE = "nova"


def create_instance(tx: Tx, spec: InstanceCreate) -> InstanceView:
    """Add an instance, and create or bind its ports in the same transaction."""
    instance_uuid = spec.uuid or str(uuid.uuid4())
    session = tx.session
    if session.scalar(select(InstanceRow.id).where(InstanceRow.uuid == instance_uuid)) is not None:
        raise Conflict(f"uuid: an instance with uuid {instance_uuid} exists")
    values = _column_values(spec.model_dump(exclude={"uuid", "networks"}))
    values["hostname"] = spec.hostname or sanitize_hostname(spec.name, f"Server-{instance_uuid}")
    values["reservation_id"] = spec.reservation_id or generate_reservation_id()
    # nova's default_availability_zone: an instance is always in some zone, and guests
    # derive their region from it (cloud-init and botocore: the zone minus its last letter)
    values["availability_zone"] = spec.availability_zone or DEFAULT_AVAILABILITY_ZONE
    for field, ec2_field in _IMAGE_FIELDS.items():
        values[ec2_field] = ec2_image_id(session, values[field])
    now = utcnow()
    row = InstanceRow(uuid=instance_uuid, created_at=now, updated_at=now, password="", **values)
    session.add(row)
    session.flush()
    row.revision = tx.record(
        "instance", instance_uuid, "create", project_id=spec.project_id, instance_id=instance_uuid
    )
    owner = f"compute:{values['availability_zone']}"
    for nic in spec.networks:
        if nic.port_id is not None:
            _bind_port(tx, nic.port_id, instance_uuid, owner)
            continue
        assert nic.network_id is not None
        fixed = None if nic.ip_address is None else [FixedIpSpec(ip_address=nic.ip_address)]
        port_spec = PortCreate(
            network_id=nic.network_id, fixed_ips=fixed, device_id=instance_uuid, device_owner=owner
        )
        create_port(tx, port_spec)
    session.refresh(row)
    return instance_views(session, [row])[0]


def _bind_port(tx: Tx, port_id: str, instance_uuid: str, owner: str) -> None:
    port = tx.session.get(PortRow, port_id)
    if port is None:
        raise NotFound(f"networks: port {port_id} not found")
    if port.device_id or port.device_owner:
        raise Conflict(
            f"networks: port {port_id} is in use by {port.device_id or port.device_owner}"
        )
    port.device_id, port.device_owner = instance_uuid, owner
    tx.record(
        "port",
        port_id,
        "update",
        project_id=port.project_id,
        network_id=port.network_id,
        instance_id=instance_uuid,
    )


def update_instance(tx: Tx, instance_uuid: str, spec: InstanceUpdate) -> InstanceView:
    """Change the given fields of an instance."""
    row = get_instance_row(tx.session, instance_uuid)
    values = _column_values(spec.changes())
    for field, ec2_field in _IMAGE_FIELDS.items():
        if field in values:
            values[ec2_field] = ec2_image_id(tx.session, values[field])
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    tx.session.flush()
    tx.record(
        "instance", instance_uuid, "update", project_id=row.project_id, instance_id=instance_uuid
    )
    tx.session.refresh(row)
    return instance_views(tx.session, [row])[0]


def set_metadata(tx: Tx, instance_uuid: str, items: dict[str, str]) -> dict[str, str]:
    """Add or change these metadata items, keeping the others; the merged metadata.

    The transaction holds the write lock from its start (`Tx`), so the instance is read
    after every earlier write committed: concurrent merges of different keys all survive.
    """
    row = get_instance_row(tx.session, instance_uuid)
    merged = dict(row.metadata_items)
    merged.update(items)
    if len(merged) > MAX_METADATA_ITEMS:
        raise InvalidInput(
            f"metadata: {len(merged)} items after the merge, more than {MAX_METADATA_ITEMS}"
        )
    _store_metadata(tx, row, merged)
    return merged


def delete_metadata(tx: Tx, instance_uuid: str, keys: Sequence[str]) -> dict[str, str]:
    """Remove these metadata keys (NotFound, removing none, if one is not there); the rest."""
    row = get_instance_row(tx.session, instance_uuid)
    remaining = dict(row.metadata_items)
    for key in keys:
        if key not in remaining:
            raise NotFound(f"metadata: instance {instance_uuid} has no key {key[:40]!r}")
    for key in keys:
        remaining.pop(key, None)
    _store_metadata(tx, row, remaining)
    return remaining


def _store_metadata(tx: Tx, row: InstanceRow, items: dict[str, str]) -> None:
    row.metadata_items = [[key, value] for key, value in items.items()]
    row.updated_at = utcnow()
    tx.session.flush()
    tx.record("instance", row.uuid, "update", project_id=row.project_id, instance_id=row.uuid)


def delete_instance(tx: Tx, instance_uuid: str) -> None:
    """Remove an instance: its compute ports are deleted, any other bound port is unbound."""
    row = get_instance_row(tx.session, instance_uuid)
    ports = tx.session.scalars(select(PortRow).where(PortRow.device_id == instance_uuid)).all()
    for port in ports:
        if not instance_of(port.device_id, port.device_owner):
            continue
        if port.device_owner.startswith("compute:"):
            delete_port(tx, port)
        else:
            port.device_id = ""
            tx.record(
                "port",
                port.id,
                "update",
                project_id=port.project_id,
                network_id=port.network_id,
                instance_id=instance_uuid,
            )
    tx.session.delete(row)
    tx.record(
        "instance", instance_uuid, "delete", project_id=row.project_id, instance_id=instance_uuid
    )


def set_password(tx: Tx, instance_uuid: str, password: str) -> bool:
    """Store the guest password once (conditional UPDATE); False if one is already set."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password: longer than {MAX_PASSWORD_LENGTH} characters")
    result = tx.session.execute(
        update(InstanceRow)
        .where(InstanceRow.uuid == instance_uuid, InstanceRow.password == "")
        .values(password=password)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        get_instance_row(tx.session, instance_uuid)  # NotFound, or a password is already set
        return False
    project_id = tx.session.scalar(
        select(InstanceRow.project_id).where(InstanceRow.uuid == instance_uuid)
    )
    tx.record(
        "instance", instance_uuid, "update", project_id=project_id or "", instance_id=instance_uuid
    )
    return True


def clear_password(tx: Tx, instance_uuid: str) -> None:
    """Forget the guest password so the guest can post a new one."""
    row = get_instance_row(tx.session, instance_uuid)
    row.password = ""
    tx.record(
        "instance", instance_uuid, "update", project_id=row.project_id, instance_id=instance_uuid
    )
