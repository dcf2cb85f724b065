"""Alembic environment: runs online on the engine handed over by metastack.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from metastack.store.engine import create_engine_for
from metastack.store.schema import Base

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):  # run from the alembic command line with sqlalchemy.url set
    engine = create_engine_for(config.get_main_option("sqlalchemy.url") or "sqlite://")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
