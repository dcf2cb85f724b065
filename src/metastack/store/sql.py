"""`SqlStore`: the SQLAlchemy store behind the metadata API (reads) and the control API (CRUD)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from metastack.config import PoolSettings
from metastack.errors import Conflict
from metastack.metadata.model import Instance
from metastack.store import agents, feed, instances, ports, routers, snapshot, topology
from metastack.store.base import Change
from metastack.store.engine import WRITE_OPTION, create_engine_for
from metastack.store.fields import canonical_ip
from metastack.store.ports import ROUTER_INTERFACE, PortFilter
from metastack.store.rows import get_row
from metastack.store.scheduling import SchedulingPolicy
from metastack.store.schema import (
    FixedIpRow,
    InstanceRow,
    NetworkRow,
    PortRow,
    ProjectRow,
    RevisionCounter,
    RouterRow,
    SubnetRow,
    utcnow,
)
from metastack.store.specs import (
    AgentReport,
    InstanceCreate,
    InstanceUpdate,
    InterfaceAdd,
    NetworkCreate,
    NetworkUpdate,
    PortCreate,
    PortUpdate,
    ProjectCreate,
    ProjectUpdate,
    RouterCreate,
    RouterUpdate,
    SubnetCreate,
    SubnetUpdate,
)
from metastack.store.tx import Tx, translated_errors
from metastack.store.views import (
    AgentView,
    InstanceView,
    NetworkView,
    PortView,
    ProjectView,
    RouterView,
    SubnetView,
)

T = TypeVar("T")


class SqlStore:
    """The store on SQLite or PostgreSQL. Sync: call it from a thread pool.

    Every write runs in one transaction that bumps the global revision and appends to the
    change feed; SQLAlchemy errors come out as Conflict, StoreUnavailable or StoreError.
    `scheduling` says how networks and routers are bound to agents (neutron's options).
    """

    def __init__(
        self,
        url: str | URL,
        *,
        engine: Engine | None = None,
        scheduling: SchedulingPolicy | None = None,
        pool: PoolSettings | None = None,
    ) -> None:
        self.engine = engine or create_engine_for(url, pool)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._repeatable_reads = self.postgres
        self.scheduling = scheduling or SchedulingPolicy()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _read(self, work: Callable[[Session], T]) -> T:
        with translated_errors(), Session(self.engine) as session:
            if self._repeatable_reads:  # several queries, one snapshot
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return work(session)

    def _write(self, work: Callable[[Tx], T]) -> T:
        with translated_errors(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                tx = Tx(session)
                result = work(tx)
                if tx.changes and self.postgres:  # delivered to listeners on commit only
                    session.execute(feed.NOTIFY, {"revision": str(tx.changes[-1].revision)})
                return result

    # The metadata API's side (MetadataStore)

    def load_instance(self, uuid: str) -> Instance | None:
        """The full snapshot of one instance with its ports, networks and subnets, or None."""
        return self._read(lambda s: snapshot.load_instance(s, uuid))

    def find_instances_by_ip(self, ip_address: str) -> list[str]:
        """Uuids of instances owning a port with this fixed IP, on any network."""
        try:
            address = canonical_ip(ip_address)
        except ValueError:
            return []
        query = (
            select(PortRow.device_id)
            .join(FixedIpRow, FixedIpRow.port_id == PortRow.id)
            .join(InstanceRow, InstanceRow.uuid == PortRow.device_id)
            .where(FixedIpRow.ip_address == address)
            .distinct()
        )
        return self._read(lambda s: list(s.scalars(query)))

    def set_password(self, uuid: str, password: str) -> bool:
        """Store the guest's password once: False if one is already set. NotFound if no instance."""
        return self._write(lambda tx: instances.set_password(tx, uuid, password))

    def current_revision(self) -> int:
        """The global revision: the number of the last committed change (0 when none)."""
        query = select(RevisionCounter.value).where(RevisionCounter.id == 1)
        with translated_errors(), self.engine.connect() as conn:  # one cheap statement
            return conn.execute(query).scalar() or 0

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        """Changes with a revision greater than `revision`, oldest first, at most `limit`
        (pruned ones are missing: the first may be past `revision + 1`)."""
        return self._read(lambda s: feed.changes_after(s, revision, limit))

    def changes_page(self, revision: int, limit: int = 1000) -> tuple[int, list[Change]]:
        """The current revision and the changes after `revision`, read in one snapshot;
        ChangesPruned when the change after `revision` is no longer kept."""
        found = self._read(lambda s: feed.page(s, revision, limit))
        return found.revision, found.changes

    def prune_changes(self, older_than: float) -> int:
        """Drop the changes recorded more than `older_than` seconds ago; how many went.
        Safe to run in every process at once (one prunes, the others skip or find none)."""
        before = utcnow() - timedelta(seconds=older_than)
        pruned = 0
        while True:
            with translated_errors(), self.engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with Session(bind=conn) as session, session.begin():
                    batch = feed.prune(session, before)
            pruned += batch
            if batch < feed.PRUNE_BATCH:
                return pruned

    # Projects

    def create_project(self, spec: ProjectCreate) -> ProjectView:
        """Add a project (id generated unless given)."""
        return self._write(lambda tx: topology.create_project(tx, spec))

    def list_projects(self) -> list[ProjectView]:
        """Every project."""
        query = select(ProjectRow).order_by(ProjectRow.created_at, ProjectRow.id)
        return self._read(lambda s: [topology.project_view(row) for row in s.scalars(query)])

    def get_project(self, project_id: str) -> ProjectView:
        """One project, or NotFound."""
        return self._read(
            lambda s: topology.project_view(get_row(s, ProjectRow, project_id, "project"))
        )

    def update_project(self, project_id: str, spec: ProjectUpdate) -> ProjectView:
        """Change a project's name or description."""
        return self._write(lambda tx: topology.update_project(tx, project_id, spec))

    def delete_project(self, project_id: str) -> None:
        """Remove a project that owns nothing; Conflict otherwise."""
        self._write(lambda tx: topology.delete_project(tx, project_id))

    # Networks and subnets

    def create_network(self, spec: NetworkCreate) -> NetworkView:
        """Add a network, scheduled to DHCP agents in the same transaction."""

        def work(tx: Tx) -> NetworkView:
            network_id = topology.create_network(tx, spec).id
            agents.schedule(tx, self.scheduling, utcnow(), networks=[network_id], routers=[])
            row = get_row(tx.session, NetworkRow, network_id, "network")
            return topology.network_views(tx.session, [row])[0]

        return self._write(work)

    def list_networks(
        self, *, ids: Sequence[str] = (), name: str | None = None, project_id: str | None = None
    ) -> list[NetworkView]:
        """Networks filtered by id (any of), name, project."""
        return self._read(
            lambda s: topology.list_networks(s, ids=ids, name=name, project_id=project_id)
        )

    def get_network(self, network_id: str) -> NetworkView:
        """One network, or NotFound."""

        def work(session: Session) -> NetworkView:
            row = get_row(session, NetworkRow, network_id, "network")
            return topology.network_views(session, [row])[0]

        return self._read(work)

    def update_network(self, network_id: str, spec: NetworkUpdate) -> NetworkView:
        """Change a network's name or MTU."""
        return self._write(lambda tx: topology.update_network(tx, network_id, spec))

    def delete_network(self, network_id: str) -> None:
        """Remove a network without ports (its subnets go with it)."""
        self._write(lambda tx: topology.delete_network(tx, network_id))

    def create_subnet(self, spec: SubnetCreate) -> SubnetView:
        """Add a subnet to a network."""
        return self._write(lambda tx: topology.create_subnet(tx, spec))

    def list_subnets(
        self, *, network_ids: Sequence[str] = (), name: str | None = None
    ) -> list[SubnetView]:
        """Subnets filtered by network (any of) and name."""
        return self._read(lambda s: topology.list_subnets(s, network_ids=network_ids, name=name))

    def get_subnet(self, subnet_id: str) -> SubnetView:
        """One subnet, or NotFound."""
        return self._read(
            lambda s: topology.subnet_view(get_row(s, SubnetRow, subnet_id, "subnet"))
        )

    def update_subnet(self, subnet_id: str, spec: SubnetUpdate) -> SubnetView:
        """Change a subnet's mutable fields."""
        return self._write(lambda tx: topology.update_subnet(tx, subnet_id, spec))

    def delete_subnet(self, subnet_id: str) -> None:
        """Remove a subnet that no port has an address on."""
        self._write(lambda tx: topology.delete_subnet(tx, subnet_id))

    # Routers

    def create_router(self, spec: RouterCreate) -> RouterView:
        """Add a router (HA when the policy allows several L3 agents per router), scheduled
        to L3 agents in the same transaction."""

        def work(tx: Tx) -> RouterView:
            row = routers.create_router(tx, spec, ha=self.scheduling.ha_routers)
            agents.schedule(tx, self.scheduling, utcnow(), networks=[], routers=[row.id])
            return routers.router_views(tx.session, [row])[0]

        return self._write(work)

    def list_routers(
        self,
        *,
        ids: Sequence[str] = (),
        project_id: str | None = None,
        name: str | None = None,
    ) -> list[RouterView]:
        """Routers with their interfaces, filtered by id (any of), project and name."""
        return self._read(
            lambda s: routers.list_routers(s, ids=ids, project_id=project_id, name=name)
        )

    def get_router(self, router_id: str) -> RouterView:
        """One router with its interfaces, or NotFound."""

        def work(session: Session) -> RouterView:
            row = get_row(session, RouterRow, router_id, "router")
            return routers.router_views(session, [row])[0]

        return self._read(work)

    def update_router(self, router_id: str, spec: RouterUpdate) -> RouterView:
        """Rename a router."""
        return self._write(lambda tx: routers.update_router(tx, router_id, spec))

    def delete_router(self, router_id: str) -> None:
        """Remove a router without interfaces."""
        self._write(lambda tx: routers.delete_router(tx, router_id))

    def add_router_interface(self, router_id: str, spec: InterfaceAdd) -> RouterView:
        """Attach a router to a subnet (a port with the gateway IP unless another is given)."""
        return self._write(lambda tx: routers.add_interface(tx, router_id, spec))

    def remove_router_interface(self, router_id: str, subnet_id: str) -> RouterView:
        """Detach a router from a subnet."""
        return self._write(lambda tx: routers.remove_interface(tx, router_id, subnet_id))

    # Agents and scheduling

    def report_agent(self, spec: AgentReport, now: datetime | None = None) -> AgentView:
        """Register an agent or refresh its heartbeat (scheduling to it when it is new, back
        from the dead, or its capabilities changed)."""
        when = now or utcnow()
        return self._write(lambda tx: agents.report(tx, spec, self.scheduling, when))

    def list_agents(
        self, *, host: str | None = None, now: datetime | None = None
    ) -> list[AgentView]:
        """Agents by host, with what is scheduled to them."""
        when = now or utcnow()
        return self._read(lambda s: agents.list_agents(s, self.scheduling, when, host=host))

    def get_agent(self, agent_id: str, now: datetime | None = None) -> AgentView:
        """One agent, or NotFound."""
        when = now or utcnow()

        def work(session: Session) -> AgentView:
            row = agents.get_agent_row(session, agent_id)
            return agents.agent_views(session, [row], self.scheduling, when)[0]

        return self._read(work)

    def delete_agent(self, agent_id: str, now: datetime | None = None) -> None:
        """Remove an agent; what it served is scheduled to others."""
        when = now or utcnow()
        self._write(lambda tx: agents.delete_agent(tx, agent_id, self.scheduling, when))

    def reschedule(self, now: datetime | None = None) -> int:
        """The periodic pass: bind what waits for an agent, move networks and routers off
        dead agents where failover is allowed, and remove DHCP ports of agents on networks
        no longer scheduled to them. Reads first and takes the write lock only when there is
        something to do; the number of bindings and ports changed."""
        when = now or utcnow()
        if not self._read(lambda s: agents.pending(s, self.scheduling, when)):
            return 0
        return self._write(lambda tx: agents.schedule(tx, self.scheduling, when, failover=True))

    # Ports

    def create_port(self, spec: PortCreate) -> PortView:
        """Add a port (MAC and addresses generated when not given)."""

        def work(tx: Tx) -> PortView:
            return ports.port_views(tx.session, [ports.create_port(tx, spec)])[0]

        return self._write(work)

    def list_ports(self, where: PortFilter | None = None) -> list[PortView]:
        """Ports matching every filter given."""
        return self._read(lambda s: ports.list_ports(s, where or PortFilter()))

    def get_port(self, port_id: str) -> PortView:
        """One port, or NotFound."""

        def work(session: Session) -> PortView:
            row = get_row(session, PortRow, port_id, "port")
            return ports.port_views(session, [row])[0]

        return self._read(work)

    def update_port(self, port_id: str, spec: PortUpdate) -> PortView:
        """Change a port's mutable fields."""

        def work(tx: Tx) -> PortView:
            return ports.port_views(tx.session, [ports.update_port(tx, port_id, spec)])[0]

        return self._write(work)

    def delete_port(self, port_id: str) -> None:
        """Remove a port; a router interface is removed through its router."""

        def work(tx: Tx) -> None:
            row = get_row(tx.session, PortRow, port_id, "port")
            if row.device_owner == ROUTER_INTERFACE:
                raise Conflict(f"port {port_id} is a router interface: remove it from the router")
            ports.delete_port(tx, row)

        self._write(work)

    # Instances

    def create_instance(self, spec: InstanceCreate) -> InstanceView:
        """Add an instance and its ports in one transaction."""
        return self._write(lambda tx: instances.create_instance(tx, spec))

    def list_instances(
        self, *, project_id: str | None = None, name: str | None = None
    ) -> list[InstanceView]:
        """Instances filtered by project and name."""
        return self._read(lambda s: instances.list_instances(s, project_id=project_id, name=name))

    def get_instance(self, uuid: str) -> InstanceView:
        """One instance, or NotFound."""
        return self._read(
            lambda s: instances.instance_views(s, [instances.get_instance_row(s, uuid)])[0]
        )

    def update_instance(self, uuid: str, spec: InstanceUpdate) -> InstanceView:
        """Change the given fields of an instance."""
        return self._write(lambda tx: instances.update_instance(tx, uuid, spec))

    def set_instance_metadata(self, uuid: str, items: dict[str, str]) -> dict[str, str]:
        """Merge metadata items into an instance's (one transaction); the merged metadata."""
        return self._write(lambda tx: instances.set_metadata(tx, uuid, items))

    def delete_instance_metadata(self, uuid: str, keys: Sequence[str]) -> dict[str, str]:
        """Remove metadata keys of an instance (one transaction); the remaining metadata."""
        return self._write(lambda tx: instances.delete_metadata(tx, uuid, keys))

    def delete_instance(self, uuid: str) -> None:
        """Remove an instance and the ports created for it."""
        self._write(lambda tx: instances.delete_instance(tx, uuid))

    def get_password(self, uuid: str) -> str:
        """The password the guest posted ('' when none)."""
        return self._read(lambda s: instances.get_instance_row(s, uuid).password)

    def clear_password(self, uuid: str) -> None:
        """Forget the guest password, so the guest may post a new one."""
        self._write(lambda tx: instances.clear_password(tx, uuid))
