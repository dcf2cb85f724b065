"""Routers and their interfaces: an interface is a port owned by the router on one subnet."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from metastack.errors import Conflict, InvalidInput, NotFound
from metastack.store.ports import ROUTER_INTERFACE, create_port, delete_port, fixed_ips_of
from metastack.store.rows import get_row
from metastack.store.scheduling import free_vrid
from metastack.store.schema import L3BindingRow, PortRow, RouterRow, SubnetRow, utcnow
from metastack.store.specs import FixedIpSpec, InterfaceAdd, PortCreate, RouterCreate, RouterUpdate
from metastack.store.tx import Tx
from metastack.store.views import RouterInterfaceView, RouterView


def router_views(session: Session, rows: Sequence[RouterRow]) -> list[RouterView]:
    """API views of routers with their interfaces and L3 agents (three queries for all)."""
    interfaces: dict[str, list[RouterInterfaceView]] = {row.id: [] for row in rows}
    agents: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        bindings = (
            select(L3BindingRow.router_id, L3BindingRow.agent_id)
            .where(L3BindingRow.router_id.in_(list(agents)))
            .order_by(L3BindingRow.binding_index)
        )
        for router_id, agent_id in session.execute(bindings):
            agents[router_id].append(agent_id)
        ports = session.scalars(
            select(PortRow)
            .where(
                PortRow.device_owner == ROUTER_INTERFACE, PortRow.device_id.in_(list(interfaces))
            )
            .order_by(PortRow.created_revision)
        ).all()
        ips = fixed_ips_of(session, [port.id for port in ports])
        for port in ports:
            for fixed in ips[port.id]:
                interfaces[port.device_id].append(
                    RouterInterfaceView(
                        subnet_id=fixed.subnet_id,
                        network_id=port.network_id,
                        port_id=port.id,
                        ip_address=fixed.ip_address,
                    )
                )
    return [
        RouterView(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            interfaces=interfaces[row.id],
            ha=row.ha,
            vrid=row.vrid,
            l3_agents=agents[row.id],
            created_at=row.created_at,
        )
        for row in rows
    ]


def list_routers(
    session: Session,
    *,
    ids: Sequence[str] = (),
    project_id: str | None = None,
    name: str | None = None,
) -> list[RouterView]:
    """Routers, oldest first, filtered by id (any of), project and name."""
    query = select(RouterRow).order_by(RouterRow.created_revision)
    if ids:
        query = query.where(RouterRow.id.in_(ids))
    if project_id is not None:
        query = query.where(RouterRow.project_id == project_id)
    if name is not None:
        query = query.where(RouterRow.name == name)
    return router_views(session, session.scalars(query).all())


def allocate_vrid(session: Session, project_id: str) -> int:
    """The lowest VRRP id no HA router of the project holds; Conflict when all 255 are."""
    used = session.scalars(
        select(RouterRow.vrid).where(
            RouterRow.project_id == project_id, RouterRow.vrid.is_not(None)
        )
    ).all()
    vrid = free_vrid({value for value in used if value is not None})
    if vrid is None:
        raise Conflict(f"project {project_id} has 255 HA routers: no VRRP id (1-255) is free")
    return vrid


def create_router(tx: Tx, spec: RouterCreate, *, ha: bool = False) -> RouterRow:
    """Add a router without interfaces; an HA one gets a VRRP id free in its project."""
    router_id = spec.id or str(uuid.uuid4())
    if tx.session.get(RouterRow, router_id) is not None:
        raise Conflict(f"id: a router with id {router_id} exists")
    row = RouterRow(id=router_id, name=spec.name, project_id=spec.project_id, created_at=utcnow())
    row.ha = ha
    row.vrid = allocate_vrid(tx.session, spec.project_id) if ha else None
    row.created_revision = tx.record("router", router_id, "create", project_id=spec.project_id)
    tx.session.add(row)
    tx.session.flush()
    return row


def update_router(tx: Tx, router_id: str, spec: RouterUpdate) -> RouterView:
    """Rename a router."""
    row = get_row(tx.session, RouterRow, router_id, "router")
    for key, value in spec.changes().items():
        setattr(row, key, value)
    tx.record("router", router_id, "update", project_id=row.project_id)
    return router_views(tx.session, [row])[0]


def _interface_ports(session: Session, router_id: str) -> list[PortRow]:
    query = select(PortRow).where(
        PortRow.device_owner == ROUTER_INTERFACE, PortRow.device_id == router_id
    )
    return list(session.scalars(query))


def delete_router(tx: Tx, router_id: str) -> None:
    """Remove a router that has no interfaces left."""
    row = get_row(tx.session, RouterRow, router_id, "router")
    if _interface_ports(tx.session, router_id):
        raise Conflict(f"router {router_id} still has interfaces")
    tx.session.delete(row)
    tx.record("router", router_id, "delete", project_id=row.project_id)


def add_interface(tx: Tx, router_id: str, spec: InterfaceAdd) -> RouterView:
    """Attach the router to a subnet with a port holding the subnet's gateway IP by default."""
    router = get_row(tx.session, RouterRow, router_id, "router")
    subnet = get_row(tx.session, SubnetRow, spec.subnet_id, "subnet", "subnet_id")
    attached = fixed_ips_of(
        tx.session, [port.id for port in _interface_ports(tx.session, router_id)]
    )
    if any(ip.subnet_id == subnet.id for ips in attached.values() for ip in ips):
        raise Conflict(f"subnet_id: router {router_id} already has an interface on {subnet.id}")
    address = spec.ip_address or subnet.gateway_ip
    if address is None:
        raise InvalidInput(f"ip_address: subnet {subnet.id} has no gateway_ip, give an address")
    create_port(
        tx,
        PortCreate(
            network_id=subnet.network_id,
            project_id=router.project_id,
            fixed_ips=[FixedIpSpec(subnet_id=subnet.id, ip_address=address)],
            device_id=router_id,
            device_owner=ROUTER_INTERFACE,
        ),
    )
    tx.record(
        "router", router_id, "update", project_id=router.project_id, network_id=subnet.network_id
    )
    return router_views(tx.session, [router])[0]


def remove_interface(tx: Tx, router_id: str, subnet_id: str) -> RouterView:
    """Detach the router from a subnet, deleting its interface port."""
    router = get_row(tx.session, RouterRow, router_id, "router")
    ports = _interface_ports(tx.session, router_id)
    ips = fixed_ips_of(tx.session, [port.id for port in ports])
    for port in ports:
        if any(ip.subnet_id == subnet_id for ip in ips[port.id]):
            delete_port(tx, port)
            tx.record(
                "router",
                router_id,
                "update",
                project_id=router.project_id,
                network_id=port.network_id,
            )
            return router_views(tx.session, [router])[0]
    raise NotFound(f"router {router_id} has no interface on subnet {subnet_id}")
