"""Engine creation: SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from metastack.config import PoolSettings
from metastack.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL gets the same patience: a connection attempt and a lock wait end in
# StoreUnavailable (503) instead of waiting as long as a hung server or a held lock lasts.
POSTGRES_CONNECT_TIMEOUT_S = 5
POSTGRES_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS
WRITE_OPTION = "metastack_write"


def create_engine_for(url: str | URL, pool: PoolSettings | None = None) -> Engine:
    """A sync engine for `url`: `sqlite:///path` or `postgresql+psycopg://...`, with a
    connection pool sized by `pool` (the defaults of [api] when not given).

    On SQLite every connection gets WAL, a busy timeout and foreign keys, and a transaction
    opened on a connection with execution option `metastack_write=True` starts with
    BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout instead of failing
    when they upgrade a read lock.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    pool = pool or PoolSettings()
    sizes: dict[str, Any] = {
        "pool_size": pool.size,
        "max_overflow": pool.overflow,
        "pool_timeout": pool.timeout,
    }
    if backend == "sqlite":
        return _sqlite_engine(parsed, sizes)
    if backend == "postgresql":
        return _postgres_engine(postgres_url(parsed), sizes)
    raise ConfigError(f"database_url: unsupported database {backend!r} (sqlite or postgresql)")


def postgres_url(url: URL) -> URL:
    """`url` with a PostgreSQL driver SQLAlchemy has (psycopg 3 unless psycopg2 is named)."""
    if url.get_driver_name() not in ("psycopg", "psycopg2"):
        return url.set(drivername="postgresql+psycopg")
    return url


def _postgres_engine(url: URL, sizes: dict[str, Any]) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:  # a URL may choose its own
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **sizes)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {POSTGRES_LOCK_TIMEOUT_MS}")
        finally:
            cursor.close()
        dbapi_connection.commit()  # keep the setting past the pool's rollback on return

    return engine


def _sqlite_engine(url: URL, sizes: dict[str, Any]) -> Engine:
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:  # one shared connection, or every thread would see its own empty database
        kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(sizes)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
