"""The demo's database: SQLite by default; PostgreSQL, through its unix socket, for
several API nodes.

API nodes run in namespaces of their own, whose 127.0.0.1 is their own: they reach
PostgreSQL through its unix socket directory (`?host=/var/run/postgresql`), never through
the host's network.
"""

from __future__ import annotations

import importlib.util

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from metastack.demo.errors import DemoError, DemoUsageError

SOCKET_DIR = "/var/run/postgresql"
EXAMPLE = f"postgresql+psycopg://postgres@/DBNAME?host={SOCKET_DIR}"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise DemoUsageError(f"--database {url!r}: not a database URL ({exc})") from None


def check_database(url: str, api_nodes: int, *, in_namespaces: bool) -> None:
    """Refuse (DemoUsageError) what the demo cannot run on: several API nodes without
    PostgreSQL, a PostgreSQL URL the nodes' namespaces cannot reach, no driver."""
    if not url:
        if api_nodes > 1:
            raise DemoUsageError(
                f"{api_nodes} API nodes share one database, which must be PostgreSQL: "
                f"add --database '{EXAMPLE}'"
            )
        return
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if api_nodes > 1:
            raise DemoUsageError(
                f"--database {url!r}: {api_nodes} API nodes need PostgreSQL, not SQLite "
                f"(e.g. '{EXAMPLE}')"
            )
        return
    if backend != "postgresql":
        raise DemoUsageError(f"--database {url!r}: SQLite or PostgreSQL only")
    if parsed.get_driver_name() != "psycopg":
        raise DemoUsageError(f"--database {url!r}: use the psycopg driver ({EXAMPLE})")
    if importlib.util.find_spec("psycopg") is None:
        raise DemoUsageError("PostgreSQL needs its driver: pip install 'metastack[postgresql]'")
    # No host at all is libpq's default socket directory, also a unix socket.
    socket_dir = parsed.query.get("host", "/")
    if in_namespaces and (parsed.host or not isinstance(socket_dir, str) or socket_dir[:1] != "/"):
        raise DemoUsageError(
            f"--database {url!r}: the API nodes run in namespaces of their own and reach "
            f"PostgreSQL only through its unix socket directory: '{EXAMPLE}'"
        )
    if not parsed.database:
        raise DemoUsageError(f"--database {url!r}: name the database ({EXAMPLE})")


def _admin_url(url: str) -> URL:
    return _parse(url).set(database="postgres")


def ensure_database(url: str) -> bool:
    """Create a PostgreSQL URL's database if it does not exist; True if it was created."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "postgresql":
        return False
    name = str(parsed.database)
    engine = create_engine(_admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if found is not None:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
            return True
    except SQLAlchemyError as exc:
        raise DemoError(f"PostgreSQL at {parsed.render_as_string()}: {exc}") from None
    finally:
        engine.dispose()


def drop_database(url: str) -> None:
    """Drop a PostgreSQL URL's database (its connections are ended first)."""
    parsed = _parse(url)
    engine = create_engine(_admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(str(parsed.database))
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    except SQLAlchemyError as exc:
        raise DemoError(f"dropping {parsed.database}: {exc}") from None
    finally:
        engine.dispose()
