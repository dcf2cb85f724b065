"""Alembic migrations shipped in the package, run programmatically: `upgrade(url)`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from metastack.store.engine import create_engine_for
from metastack.store.tx import translated_errors

MIGRATIONS = Path(__file__).with_name("migrations")


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
        with translated_errors():
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
