"""What a benchmark run may leave behind, and PostgreSQL through its unix socket for the
multi-node runs."""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_DIR = "/var/run/postgresql"


def leftovers(report: dict[str, object]) -> list[str]:
    """Namespaces, /etc/netns folders, the work folder and processes of the run in `report`
    (its `prefix` and `workdir`) that still exist."""
    prefix, workdir = str(report["prefix"]), str(report["workdir"])
    found = [name for name in os.listdir("/run/netns") if name.startswith(prefix)]
    if Path("/etc/netns").is_dir():
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix)]
    if Path(workdir).exists():
        found.append(workdir)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if workdir.encode() in cmdline or prefix.encode() in cmdline:
            found.append(f"process {pid}: {cmdline[:120]!r}")
    return found


def postgres_user() -> str:
    """The user of METASTACK_TEST_POSTGRES_URL if set (CI), else `postgres`."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("METASTACK_TEST_POSTGRES_URL", "")
    return (make_url(url).username if url else None) or "postgres"


def postgres_absent() -> str | None:
    """Why PostgreSQL cannot be reached through its unix socket here, or None."""
    if not Path(SOCKET_DIR, ".s.PGSQL.5432").exists():
        return f"no PostgreSQL unix socket in {SOCKET_DIR}"
    try:
        import psycopg

        with psycopg.connect(host=SOCKET_DIR, user=postgres_user(), dbname="postgres") as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # ImportError, OperationalError: both mean "cannot run"
        return f"PostgreSQL through {SOCKET_DIR}: {exc}"
    return None


def databases() -> set[str]:
    """The names of the server's databases."""
    import psycopg

    with psycopg.connect(host=SOCKET_DIR, user=postgres_user(), dbname="postgres") as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def socket_url(name: str) -> str:
    """A URL of database `name` through the unix socket directory."""
    return f"postgresql+psycopg://{postgres_user()}@/{name}?host={SOCKET_DIR}"
