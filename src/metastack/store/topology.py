"""Projects, networks and subnets: create, read, update, delete inside one session or Tx."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from metastack.errors import Conflict, InvalidInput
from metastack.store.ipam import in_subnet
from metastack.store.ports import delete_port
from metastack.store.rows import ensure_new, get_row
from metastack.store.schema import (
    DhcpBindingRow,
    FixedIpRow,
    InstanceRow,
    NetworkRow,
    PortRow,
    ProjectRow,
    RouterRow,
    SubnetRow,
    utcnow,
)
from metastack.store.specs import (
    NetworkCreate,
    NetworkUpdate,
    ProjectCreate,
    ProjectUpdate,
    SubnetCreate,
    SubnetUpdate,
)
from metastack.store.tx import Tx
from metastack.store.views import NetworkView, ProjectView, SubnetView


def project_view(row: ProjectRow) -> ProjectView:
    """The API view of a project row."""
    return ProjectView(
        id=row.id, name=row.name, description=row.description, created_at=row.created_at
    )


def create_project(tx: Tx, spec: ProjectCreate) -> ProjectView:
    """Add a project."""
    project_id = spec.id or uuid.uuid4().hex
    ensure_new(tx.session, ProjectRow, project_id, "project")
    row = ProjectRow(
        id=project_id, name=spec.name, description=spec.description, created_at=utcnow()
    )
    tx.session.add(row)
    tx.record("project", project_id, "create", project_id=project_id)
    return project_view(row)


def update_project(tx: Tx, project_id: str, spec: ProjectUpdate) -> ProjectView:
    """Rename or redescribe a project."""
    row = get_row(tx.session, ProjectRow, project_id, "project")
    for key, value in spec.changes().items():
        setattr(row, key, value)
    tx.record("project", project_id, "update", project_id=project_id)
    return project_view(row)


def delete_project(tx: Tx, project_id: str) -> None:
    """Remove a project that owns no network, router or instance."""
    row = get_row(tx.session, ProjectRow, project_id, "project")
    owners = (
        (NetworkRow.project_id, "networks"),
        (RouterRow.project_id, "routers"),
        (InstanceRow.project_id, "instances"),
    )
    for column, what in owners:
        if tx.session.scalar(select(exists().where(column == project_id))):
            raise Conflict(f"project {project_id} still owns {what}")
    tx.session.delete(row)
    tx.record("project", project_id, "delete", project_id=project_id)


def network_views(session: Session, rows: Sequence[NetworkRow]) -> list[NetworkView]:
    """API views of networks, with their subnet ids and DHCP agents (two queries for all)."""
    subnets: dict[str, list[str]] = {row.id: [] for row in rows}
    agents: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        query = (
            select(SubnetRow.network_id, SubnetRow.id)
            .where(SubnetRow.network_id.in_(list(subnets)))
            .order_by(SubnetRow.created_revision)
        )
        for network_id, subnet_id in session.execute(query):
            subnets[network_id].append(subnet_id)
        bindings = (
            select(DhcpBindingRow.network_id, DhcpBindingRow.agent_id)
            .where(DhcpBindingRow.network_id.in_(list(agents)))
            .order_by(DhcpBindingRow.binding_index)
        )
        for network_id, agent_id in session.execute(bindings):
            agents[network_id].append(agent_id)
    return [
        NetworkView(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            mtu=row.mtu,
            subnets=subnets[row.id],
            dhcp_agents=agents[row.id],
            created_at=row.created_at,
        )
        for row in rows
    ]


def create_network(tx: Tx, spec: NetworkCreate) -> NetworkView:
    """Add a network."""
    network_id = spec.id or str(uuid.uuid4())
    ensure_new(tx.session, NetworkRow, network_id, "network")
    row = NetworkRow(id=network_id, name=spec.name, project_id=spec.project_id, mtu=spec.mtu)
    row.created_at = utcnow()
    row.created_revision = tx.record(
        "network", network_id, "create", project_id=spec.project_id, network_id=network_id
    )
    tx.session.add(row)
    return network_views(tx.session, [row])[0]


def update_network(tx: Tx, network_id: str, spec: NetworkUpdate) -> NetworkView:
    """Rename a network or change its MTU."""
    row = get_row(tx.session, NetworkRow, network_id, "network")
    for key, value in spec.changes().items():
        setattr(row, key, value)
    tx.record("network", network_id, "update", project_id=row.project_id, network_id=network_id)
    return network_views(tx.session, [row])[0]


# Ports the network's own services own; they go with the network, as in neutron.
SERVICE_PORT_OWNERS = ("network:dhcp",)


def delete_network(tx: Tx, network_id: str) -> None:
    """Remove a network whose only ports are its DHCP ports; subnets and those ports go too."""
    row = get_row(tx.session, NetworkRow, network_id, "network")
    in_use = exists().where(
        PortRow.network_id == network_id, PortRow.device_owner.not_in(SERVICE_PORT_OWNERS)
    )
    if tx.session.scalar(select(in_use)):
        raise Conflict(f"network {network_id} still has ports")
    service_ports = tx.session.scalars(
        select(PortRow).where(
            PortRow.network_id == network_id, PortRow.device_owner.in_(SERVICE_PORT_OWNERS)
        )
    ).all()
    for port in service_ports:
        delete_port(tx, port)
    subnet_ids = tx.session.scalars(
        select(SubnetRow.id).where(SubnetRow.network_id == network_id)
    ).all()
    for subnet_id in subnet_ids:
        tx.record("subnet", subnet_id, "delete", project_id=row.project_id, network_id=network_id)
    tx.session.execute(delete(SubnetRow).where(SubnetRow.network_id == network_id))
    tx.session.delete(row)
    tx.record("network", network_id, "delete", project_id=row.project_id, network_id=network_id)


def list_networks(
    session: Session,
    *,
    ids: Sequence[str] = (),
    name: str | None = None,
    project_id: str | None = None,
) -> list[NetworkView]:
    """Networks, oldest first, filtered by id (any of), name and project."""
    query = select(NetworkRow).order_by(NetworkRow.created_revision)
    if ids:
        query = query.where(NetworkRow.id.in_(ids))
    if name is not None:
        query = query.where(NetworkRow.name == name)
    if project_id is not None:
        query = query.where(NetworkRow.project_id == project_id)
    return network_views(session, session.scalars(query).all())


def subnet_view(row: SubnetRow) -> SubnetView:
    """The API view of a subnet row."""
    return SubnetView.model_validate(
        {
            "id": row.id,
            "network_id": row.network_id,
            "name": row.name,
            "cidr": row.cidr,
            "ip_version": row.ip_version,
            "gateway_ip": row.gateway_ip,
            "dns_nameservers": row.dns_nameservers,
            "host_routes": row.host_routes,
            "enable_dhcp": row.enable_dhcp,
            "ipv6_address_mode": row.ipv6_address_mode,
            "created_at": row.created_at,
        }
    )


def _overlaps(cidr: str, other: str) -> bool:
    a, b = ipaddress.ip_network(cidr), ipaddress.ip_network(other)
    return a.network_address in b or b.network_address in a


def _check_gateway(gateway: str | None, cidr: str) -> None:
    if gateway is not None and not in_subnet(gateway, cidr):
        raise InvalidInput(f"gateway_ip: {gateway} is not in {cidr}")


def create_subnet(tx: Tx, spec: SubnetCreate) -> SubnetView:
    """Add a subnet to a network; its CIDR may not overlap another subnet of that network."""
    network = get_row(tx.session, NetworkRow, spec.network_id, "network", "network_id")
    subnet_id = spec.id or str(uuid.uuid4())
    ensure_new(tx.session, SubnetRow, subnet_id, "subnet")
    new = ipaddress.ip_network(spec.cidr)
    for other in tx.session.scalars(select(SubnetRow).where(SubnetRow.network_id == network.id)):
        if other.ip_version == new.version and _overlaps(spec.cidr, other.cidr):
            raise Conflict(f"cidr: {spec.cidr} overlaps subnet {other.id} ({other.cidr})")
    gateway = spec.effective_gateway()
    _check_gateway(gateway, spec.cidr)
    row = SubnetRow(
        id=subnet_id,
        network_id=network.id,
        name=spec.name,
        cidr=spec.cidr,
        ip_version=new.version,
        gateway_ip=gateway,
        dns_nameservers=list(spec.dns_nameservers),
        host_routes=[route.model_dump() for route in spec.host_routes],
        enable_dhcp=spec.enable_dhcp,
        ipv6_address_mode=spec.ipv6_address_mode,
        created_at=utcnow(),
    )
    row.created_revision = tx.record(
        "subnet", subnet_id, "create", project_id=network.project_id, network_id=network.id
    )
    tx.session.add(row)
    return subnet_view(row)


def update_subnet(tx: Tx, subnet_id: str, spec: SubnetUpdate) -> SubnetView:
    """Change a subnet's name, gateway, DNS servers, host routes or DHCP flag."""
    row = get_row(tx.session, SubnetRow, subnet_id, "subnet")
    changes: dict[str, Any] = spec.changes()
    if "gateway_ip" in changes:
        _check_gateway(changes["gateway_ip"], row.cidr)
    for key, value in changes.items():
        setattr(row, key, value)
    network = get_row(tx.session, NetworkRow, row.network_id, "network")
    tx.record(
        "subnet", subnet_id, "update", project_id=network.project_id, network_id=row.network_id
    )
    return subnet_view(row)


def delete_subnet(tx: Tx, subnet_id: str) -> None:
    """Remove a subnet no port has an address on."""
    row = get_row(tx.session, SubnetRow, subnet_id, "subnet")
    if tx.session.scalar(select(exists().where(FixedIpRow.subnet_id == subnet_id))):
        raise Conflict(f"subnet {subnet_id} still has ports with addresses on it")
    network = get_row(tx.session, NetworkRow, row.network_id, "network")
    tx.session.delete(row)
    tx.record(
        "subnet", subnet_id, "delete", project_id=network.project_id, network_id=row.network_id
    )


def list_subnets(
    session: Session, *, network_ids: Sequence[str] = (), name: str | None = None
) -> list[SubnetView]:
    """Subnets, oldest first, filtered by network (any of) and name."""
    query = select(SubnetRow).order_by(SubnetRow.created_revision)
    if network_ids:
        query = query.where(SubnetRow.network_id.in_(network_ids))
    if name is not None:
        query = query.where(SubnetRow.name == name)
    return [subnet_view(row) for row in session.scalars(query)]
