"""Rows by primary key: the lookups every object module of the store starts from."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

from metastack.errors import Conflict, NotFound
from metastack.store.schema import Base

R = TypeVar("R", bound=Base)


def get_row(session: Session, row_type: type[R], key: str, what: str, field: str = "") -> R:
    """The row with primary key `key`, or NotFound naming `field` (when given) and the object."""
    row = session.get(row_type, key)
    if row is None:
        prefix = f"{field}: " if field else ""
        raise NotFound(f"{prefix}{what} {key} not found")
    return row


def ensure_new(session: Session, row_type: type[Base], key: str, what: str) -> None:
    """Conflict when a `what` with primary key `key` exists already."""
    if session.get(row_type, key) is not None:
        raise Conflict(f"id: a {what} with id {key} exists")
