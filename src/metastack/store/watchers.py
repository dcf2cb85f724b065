"""The revision watcher for a store: pushed on PostgreSQL, `data_version` on a SQLite file."""

from __future__ import annotations

from sqlalchemy.engine import URL

from metastack.store.base import MetadataStore
from metastack.store.sql import SqlStore
from metastack.store.watch import (
    DEFAULT_POLL_INTERVAL,
    RevisionWatcher,
    SqliteSource,
    StoreSource,
)


def watcher_for(
    store: MetadataStore, poll_interval: float = DEFAULT_POLL_INTERVAL
) -> RevisionWatcher:
    """The watcher for a store: pushed on PostgreSQL, `data_version` on a SQLite file,
    polling `current_revision` otherwise (SQLite in memory, fakes)."""
    if isinstance(store, SqlStore):
        url: URL = store.engine.url
        if store.postgres:
            from metastack.store.pgwatch import PostgresSource  # psycopg: an extra

            return RevisionWatcher(PostgresSource(url), poll_interval)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return RevisionWatcher(SqliteSource(str(url.database)), poll_interval)
    return RevisionWatcher(StoreSource(store), poll_interval)
