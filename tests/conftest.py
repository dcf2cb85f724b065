"""Shared fixtures: a migrated database on SQLite (tmp_path) and on PostgreSQL (own schema),
and an empty PostgreSQL database of a test's own."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

POSTGRES_ENV = "METASTACK_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server URL from the environment; the test skips, saying why, without it."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url and os.environ.get("METASTACK_REQUIRE_POSTGRES"):
        pytest.fail(f"{POSTGRES_ENV} is not set but METASTACK_REQUIRE_POSTGRES is (CI)")
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL cases not run")
    return url


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema `ms_<random>`, dropped afterwards.

    An unreachable server fails the test (it does not skip).
    """
    schema = f"ms_{secrets.token_hex(6)}"
    admin = create_engine(postgres_url, pool_pre_ping=False)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        admin.dispose()


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database `ms_<random>` on the server, dropped afterwards
    (for what a schema cannot isolate: NOTIFY channels, advisory locks, backends)."""
    name = f"ms_{secrets.token_hex(6)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT", pool_pre_ping=False)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'metastack.sqlite'}"
    else:
        url = str(request.getfixturevalue("postgres_schema_url"))
    upgrade(url)
    return url


@pytest.fixture
def sql_store(database_url: str) -> Iterator[SqlStore]:
    """A SqlStore on the migrated `database_url`."""
    store = SqlStore(database_url)
    yield store
    store.close()
