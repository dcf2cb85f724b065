"""The change feed in SQL: pages of changes, the oldest revision kept, pruning, the NOTIFY.

Revisions are gap-free and commit in order: every write transaction locks the revision
counter row first (`Tx`) and holds it to its commit, so revision N+1 cannot commit before
N, and a reader that sees N+1 sees N. On PostgreSQL the transaction also publishes its
last revision with `pg_notify` before it commits; PostgreSQL delivers it only on commit,
in commit order, so a listener never hears of a revision it cannot read yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from metastack.errors import ChangesPruned
from metastack.store.base import Change
from metastack.store.schema import ChangeRow, RevisionCounter

# One channel for every metastack database on a server; the payload names the schema,
# so stores in other schemas of the same database (tests, several clouds) are told apart.
CHANNEL = "metastack_revisions"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', coalesce(current_schema(), '') || ' ' || :revision)")
# pg_try_advisory_xact_lock key: one pruner at a time per database.
PRUNE_LOCK = 0x6D657461_0002
PRUNE_BATCH = 10000  # changes deleted per transaction, so writers never wait long


@dataclass(frozen=True, slots=True)
class Page:
    """The current revision and the changes after the revision asked for."""

    revision: int
    changes: list[Change]


def notify_payload(schema: str, revision: int) -> str:
    """What a write transaction sends on CHANNEL (the NOTIFY statement builds the same)."""
    return f"{schema} {revision}"


def parse_payload(payload: str) -> tuple[str, int] | None:
    """(schema, revision) of a notification, None if it is not one of ours."""
    schema, _, revision = payload.rpartition(" ")
    return (schema, int(revision)) if revision.isdigit() else None


def current_revision(session: Session) -> int:
    """The revision of the last committed write (0 before the first)."""
    value = session.scalar(select(RevisionCounter.value).where(RevisionCounter.id == 1))
    return value or 0


def oldest_kept(session: Session, current: int) -> int:
    """The oldest revision still in the feed; `current + 1` when none is (all pruned)."""
    oldest = session.scalar(select(func.min(ChangeRow.revision)))
    return current + 1 if oldest is None else int(oldest)


def changes_after(session: Session, revision: int, limit: int) -> list[Change]:
    """Changes with a revision greater than `revision`, oldest first, at most `limit`."""
    query = (
        select(ChangeRow)
        .where(ChangeRow.revision > revision)
        .order_by(ChangeRow.revision)
        .limit(limit)
    )
    return [
        Change(
            row.revision,
            row.resource,  # type: ignore[arg-type]
            row.resource_id,
            row.action,  # type: ignore[arg-type]
            row.project_id,
            row.network_id,
            row.instance_id,
        )
        for row in session.scalars(query)
    ]


def page(session: Session, since: int, limit: int) -> Page:
    """The current revision and the changes after `since` (one snapshot); ChangesPruned
    when the change after `since` is no longer kept."""
    current = current_revision(session)
    if current <= since:  # nothing new, or a follower ahead of a replaced store
        return Page(current, [])
    oldest = oldest_kept(session, current)
    if since + 1 < oldest:
        raise ChangesPruned(since, oldest, current)
    return Page(current, changes_after(session, since, limit))


def prune(session: Session, before: datetime) -> int:
    """Delete the changes recorded before `before`, oldest first, at most PRUNE_BATCH of
    them; the number deleted. Deletes a prefix of the feed (never leaves a hole), so the
    oldest revision kept says exactly what is gone. Skips (0) on PostgreSQL while another
    process prunes."""
    if session.get_bind().dialect.name == "postgresql":
        locked = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PRUNE_LOCK})
        if not locked:
            return 0
    expired = session.scalar(
        select(func.max(ChangeRow.revision)).where(ChangeRow.created_at < before)
    )
    if expired is None:
        return 0
    first = session.scalar(select(func.min(ChangeRow.revision))) or 0
    last = min(int(expired), first + PRUNE_BATCH - 1)
    result = session.execute(delete(ChangeRow).where(ChangeRow.revision <= last))
    return int(result.rowcount)  # type: ignore[attr-defined]
