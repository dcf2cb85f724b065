"""Ports with their fixed IPs (validated, allocated, unique per network) and router interfaces."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from metastack.errors import Conflict, InvalidInput
from metastack.store.fields import canonical_ip, canonical_mac
from metastack.store.ipam import (
    SLAAC_MODES,
    eui64_address,
    generate_mac,
    in_subnet,
    is_usable_host,
    next_free_address,
)
from metastack.store.rows import get_row
from metastack.store.schema import FixedIpRow, NetworkRow, PortRow, SubnetRow, utcnow
from metastack.store.specs import FixedIpSpec, PortCreate, PortUpdate
from metastack.store.tx import Tx
from metastack.store.views import FixedIpView, PortView

ROUTER_INTERFACE = "network:router_interface"
DHCP = "network:dhcp"
# Draws of a generated MAC before giving up on a network (neutron's mac_generation_retries).
MAC_GENERATION_TRIES = 16


def instance_of(device_id: str, device_owner: str) -> str:
    """The instance a port belongs to: its device id unless a network service owns it."""
    return "" if device_owner.startswith("network:") else device_id


@dataclass(frozen=True, slots=True)
class PortFilter:
    """List filters; each sequence matches any of its values, empty means no filter."""

    network_ids: Sequence[str] = ()
    device_ids: Sequence[str] = ()
    device_owners: Sequence[str] = ()
    ip_address: str | None = None
    mac_address: str | None = None
    project_id: str | None = None


def fixed_ips_of(session: Session, port_ids: Sequence[str]) -> dict[str, list[FixedIpView]]:
    """The fixed IPs of each port, in order (one query)."""
    found: dict[str, list[FixedIpView]] = {port_id: [] for port_id in port_ids}
    if port_ids:
        query = (
            select(FixedIpRow)
            .where(FixedIpRow.port_id.in_(list(port_ids)))
            .order_by(FixedIpRow.port_id, FixedIpRow.position)
        )
        for row in session.scalars(query):
            found[row.port_id].append(
                FixedIpView(subnet_id=row.subnet_id, ip_address=row.ip_address)
            )
    return found


def port_views(session: Session, rows: Sequence[PortRow]) -> list[PortView]:
    """API views of ports, with their fixed IPs."""
    ips = fixed_ips_of(session, [row.id for row in rows])
    return [
        PortView(
            id=row.id,
            network_id=row.network_id,
            project_id=row.project_id,
            mac_address=row.mac_address,
            fixed_ips=ips[row.id],
            device_id=row.device_id,
            device_owner=row.device_owner,
            floating_ip=row.floating_ip,
            vif_type=row.vif_type,
            device_name=row.device_name,
            created_at=row.created_at,
        )
        for row in rows
    ]


def list_ports(session: Session, where: PortFilter) -> list[PortView]:
    """Ports, oldest first, matching every given filter."""
    query = select(PortRow).order_by(PortRow.created_revision)
    if where.network_ids:
        query = query.where(PortRow.network_id.in_(where.network_ids))
    if where.device_ids:
        query = query.where(PortRow.device_id.in_(where.device_ids))
    if where.device_owners:
        query = query.where(PortRow.device_owner.in_(where.device_owners))
    if where.project_id is not None:
        query = query.where(PortRow.project_id == where.project_id)
    if where.mac_address is not None:
        query = query.where(
            PortRow.mac_address == _filter_value("mac_address", canonical_mac, where.mac_address)
        )
    if where.ip_address is not None:
        address = _filter_value("ip_address", canonical_ip, where.ip_address)
        # Through the address index: a network's other ports are never scanned.
        holders = select(FixedIpRow.port_id).where(FixedIpRow.ip_address == address)
        query = query.where(PortRow.id.in_(holders))
    return port_views(session, session.scalars(query).all())


def _filter_value(name: str, canonical: Callable[[str], str], value: str) -> str:
    try:
        return canonical(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def _used_addresses(session: Session, subnet_id: str, except_port: str) -> set[str]:
    query = select(FixedIpRow.ip_address).where(
        FixedIpRow.subnet_id == subnet_id, FixedIpRow.port_id != except_port
    )
    return set(session.scalars(query))


def resolve_fixed_ips(
    session: Session,
    network_id: str,
    specs: Sequence[FixedIpSpec] | None,
    mac_address: str,
    port_id: str,
) -> list[tuple[str, str]]:
    """(subnet id, IP) pairs for a port: checked against the network's subnets, free addresses
    allocated where only a subnet is given, one per IP version when nothing is given."""
    subnets = list(
        session.scalars(
            select(SubnetRow)
            .where(SubnetRow.network_id == network_id)
            .order_by(SubnetRow.created_revision)
        )
    )
    by_id = {subnet.id: subnet for subnet in subnets}
    if specs is None:
        firsts: dict[int, SubnetRow] = {}
        for subnet in subnets:
            firsts.setdefault(subnet.ip_version, subnet)
        specs = [FixedIpSpec(subnet_id=subnet.id) for subnet in firsts.values()]
    chosen: list[tuple[str, str]] = []
    for spec in specs:
        subnet = _subnet_for(spec, by_id, subnets, network_id)
        address = spec.ip_address
        if address is None:
            taken = _used_addresses(session, subnet.id, port_id) | {ip for _, ip in chosen}
            if subnet.ip_version == 6 and subnet.ipv6_address_mode in SLAAC_MODES:
                address = eui64_address(subnet.cidr, mac_address)
            else:
                address = next_free_address(subnet.cidr, taken, subnet.gateway_ip)
        elif not is_usable_host(address, subnet.cidr):
            raise InvalidInput(f"fixed_ips: {address} is not a usable host of {subnet.cidr}")
        if any(address == ip for _, ip in chosen):
            raise InvalidInput(f"fixed_ips: {address} is given twice")
        chosen.append((subnet.id, address))
    for _, address in chosen:
        holder = session.scalar(
            select(FixedIpRow.port_id).where(
                FixedIpRow.network_id == network_id,
                FixedIpRow.ip_address == address,
                FixedIpRow.port_id != port_id,
            )
        )
        if holder is not None:
            raise Conflict(f"ip_address: {address} is already used by port {holder}")
    return chosen


def _subnet_for(
    spec: FixedIpSpec, by_id: dict[str, SubnetRow], subnets: list[SubnetRow], network_id: str
) -> SubnetRow:
    if spec.subnet_id is not None:
        subnet = by_id.get(spec.subnet_id)
        if subnet is None:
            raise InvalidInput(f"fixed_ips: subnet {spec.subnet_id} is not on network {network_id}")
        if spec.ip_address is not None and not in_subnet(spec.ip_address, subnet.cidr):
            raise InvalidInput(f"fixed_ips: {spec.ip_address} is not in subnet {subnet.cidr}")
        return subnet
    assert spec.ip_address is not None
    for subnet in subnets:
        if in_subnet(spec.ip_address, subnet.cidr):
            return subnet
    raise InvalidInput(f"fixed_ips: {spec.ip_address} is in no subnet of network {network_id}")


def _write_fixed_ips(
    session: Session, port_id: str, network_id: str, pairs: list[tuple[str, str]]
) -> None:
    session.flush()
    session.execute(delete(FixedIpRow).where(FixedIpRow.port_id == port_id))
    if pairs:
        session.execute(
            insert(FixedIpRow),
            [
                {
                    "port_id": port_id,
                    "position": position,
                    "subnet_id": subnet_id,
                    "network_id": network_id,
                    "ip_address": address,
                }
                for position, (subnet_id, address) in enumerate(pairs)
            ],
        )


def _mac_holder(session: Session, network_id: str, mac: str, port_id: str) -> str | None:
    return session.scalar(
        select(PortRow.id).where(
            PortRow.network_id == network_id, PortRow.mac_address == mac, PortRow.id != port_id
        )
    )


def _check_mac_free(session: Session, network_id: str, mac: str, port_id: str) -> None:
    holder = _mac_holder(session, network_id, mac, port_id)
    if holder is not None:
        raise Conflict(f"mac_address: {mac} is already used by port {holder}")


def _free_mac(session: Session, network_id: str, port_id: str) -> str:
    """A generated MAC no other port of the network holds. 24 random bits: among 500 ports
    two draws meet about once in 130 networks, so a taken one is drawn again (as neutron
    does, `mac_generation_retries` times)."""
    for _ in range(MAC_GENERATION_TRIES):
        mac = generate_mac()
        if _mac_holder(session, network_id, mac, port_id) is None:
            return mac
    raise Conflict(
        f"mac_address: no free address generated in {MAC_GENERATION_TRIES} tries on "
        f"network {network_id}"
    )


def create_port(tx: Tx, spec: PortCreate) -> PortRow:
    """Add a port: MAC generated and addresses allocated when not given."""
    network = get_row(tx.session, NetworkRow, spec.network_id, "network", "network_id")
    port_id = spec.id or str(uuid.uuid4())
    if tx.session.get(PortRow, port_id) is not None:
        raise Conflict(f"id: a port with id {port_id} exists")
    if spec.mac_address:
        mac = spec.mac_address
        _check_mac_free(tx.session, network.id, mac, port_id)
    else:
        mac = _free_mac(tx.session, network.id, port_id)
    pairs = resolve_fixed_ips(tx.session, network.id, spec.fixed_ips, mac, port_id)
    project_id = spec.project_id or network.project_id
    row = PortRow(
        id=port_id,
        network_id=network.id,
        project_id=project_id,
        mac_address=mac,
        device_id=spec.device_id,
        device_owner=spec.device_owner,
        floating_ip=spec.floating_ip,
        vif_type=spec.vif_type,
        device_name=spec.device_name,
        created_at=utcnow(),
    )
    row.created_revision = tx.record(
        "port",
        port_id,
        "create",
        project_id=project_id,
        network_id=network.id,
        instance_id=instance_of(spec.device_id, spec.device_owner),
    )
    tx.session.add(row)
    _write_fixed_ips(tx.session, port_id, network.id, pairs)
    return row


def update_port(tx: Tx, port_id: str, spec: PortUpdate) -> PortRow:
    """Change a port; a device change is recorded for the old and the new instance."""
    row = get_row(tx.session, PortRow, port_id, "port")
    old_instance = instance_of(row.device_id, row.device_owner)
    changes = spec.changes()
    if "mac_address" in changes:
        _check_mac_free(tx.session, row.network_id, changes["mac_address"], port_id)
    if spec.fixed_ips is not None:
        pairs = resolve_fixed_ips(
            tx.session,
            row.network_id,
            spec.fixed_ips,
            changes.get("mac_address", row.mac_address),
            port_id,
        )
        _write_fixed_ips(tx.session, port_id, row.network_id, pairs)
    changes.pop("fixed_ips", None)
    for key, value in changes.items():
        setattr(row, key, value)
    new_instance = instance_of(row.device_id, row.device_owner)
    common = {"project_id": row.project_id, "network_id": row.network_id}
    tx.record("port", port_id, "update", instance_id=new_instance, **common)
    if old_instance and old_instance != new_instance:
        tx.record("port", port_id, "update", instance_id=old_instance, **common)
    return row


def delete_port(tx: Tx, row: PortRow) -> None:
    """Remove a port and its addresses."""
    tx.session.execute(delete(FixedIpRow).where(FixedIpRow.port_id == row.id))
    tx.session.delete(row)
    tx.record(
        "port",
        row.id,
        "delete",
        project_id=row.project_id,
        network_id=row.network_id,
        instance_id=instance_of(row.device_id, row.device_owner),
    )
