"""Migrations: they create the schema the models describe, and running them twice is harmless."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from metastack.store.engine import create_engine_for
from metastack.store.migrate import MIGRATIONS, current, upgrade
from metastack.store.schema import Base


def test_schema_matches_models(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    assert current(database_url) == ScriptDirectory(str(MIGRATIONS)).get_current_head()
