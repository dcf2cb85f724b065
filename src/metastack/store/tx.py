"""Write transactions that bump the global revision; SQLAlchemy errors translated at the edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from metastack.errors import Conflict, StoreError, StoreUnavailable
from metastack.store.base import Action, Change, Resource
from metastack.store.schema import ChangeRow, InstanceRow, RevisionCounter

_CONSTRAINT_MESSAGES = {
    "fixed_ips_network_id_ip_address": "ip_address: already in use on this network",
    "fixed_ips.network_id, fixed_ips.ip_address": "ip_address: already in use on this network",
    "ports_network_id_mac_address": "mac_address: already in use on this network",
    "ports.network_id, ports.mac_address": "mac_address: already in use on this network",
    "instances_uuid": "uuid: an instance with this uuid exists",
    "instances.uuid": "uuid: an instance with this uuid exists",
    "FOREIGN KEY": "still referenced by other objects",
    "foreign key": "still referenced by other objects",
}


class Tx:
    """One write transaction. It locks the revision counter row first, so writers are serialized
    (no deadlocks, revision order = commit order) and each `record` takes the next revision."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.changes: list[Change] = []
        locked = session.execute(
            select(RevisionCounter.value).where(RevisionCounter.id == 1).with_for_update()
        ).scalar_one_or_none()
        if locked is None:
            raise StoreError("the database has no revision counter: run `metastack db upgrade`")

    def record(
        self,
        resource: Resource,
        resource_id: str,
        action: Action,
        *,
        project_id: str = "",
        network_id: str = "",
        instance_id: str = "",
    ) -> int:
        """Append one change with the next global revision and return that revision."""
        revision = self.session.execute(
            update(RevisionCounter)
            .where(RevisionCounter.id == 1)
            .values(value=RevisionCounter.value + 1)
            .returning(RevisionCounter.value)
        ).scalar_one()
        change = Change(
            revision, resource, resource_id, action, project_id, network_id, instance_id
        )
        self.session.add(
            ChangeRow(
                revision=revision,
                resource=resource,
                resource_id=resource_id,
                action=action,
                project_id=project_id,
                network_id=network_id,
                instance_id=instance_id,
            )
        )
        if instance_id:
            self.session.execute(
                update(InstanceRow).where(InstanceRow.uuid == instance_id).values(revision=revision)
            )
        self.changes.append(change)
        return revision


# Errors that say "not now" rather than "never": a standby or a database set read-only.
_UNAVAILABLE_SQLSTATES = frozenset({"25006"})  # read_only_sql_transaction


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _conflict_message(exc: IntegrityError) -> str:
    text = str(exc.orig)
    for needle, message in _CONSTRAINT_MESSAGES.items():
        if needle in text:
            return message
    return "conflicts with an existing object: " + text.splitlines()[0][:200]


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn SQLAlchemy exceptions into Conflict, StoreUnavailable or StoreError."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(_conflict_message(exc)) from exc
    except OperationalError as exc:
        first_line = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        raise StoreUnavailable(f"database unavailable: {first_line[:200]}") from exc
    except PoolTimeout as exc:
        raise StoreUnavailable("database unavailable: no free connection in the pool") from exc
    except DBAPIError as exc:
        first_line = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        if exc.connection_invalidated or _sqlstate(exc) in _UNAVAILABLE_SQLSTATES:
            raise StoreUnavailable(f"database unavailable: {first_line[:200]}") from exc
        raise StoreError(f"database error: {first_line[:200]}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {exc}") from exc
