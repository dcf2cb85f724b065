"""Alembic migrations shipped in the package, run programmatically: `upgrade(url)`.

On PostgreSQL an upgrade holds a session advisory lock, so API processes started at
once on an empty database migrate one after the other instead of racing to create the
same tables: the first creates them, the others find the schema at head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from metastack.store.engine import create_engine_for
from metastack.store.tx import translated_errors

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock key of schema migrations (any bigint, fixed for every metastack).
MIGRATION_LOCK = 0x6D657461_0001


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the migration advisory lock on PostgreSQL (waiting for it as long as another
    process migrates); nothing on SQLite, whose writers already queue."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = 0"))  # wait out another process's migration
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            conn.commit()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config for our migrations that runs them on `engine` (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Create or upgrade the schema at `url` to `revision` (default: latest).

    Raises StoreUnavailable when the database cannot be reached.
    """
    engine = create_engine_for(url)
    try:
        with translated_errors(), migration_lock(engine):
            command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def current(url: str | URL) -> str | None:
    """The schema revision the database at `url` is at, None if never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine_for(url)
    try:
        with translated_errors(), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
