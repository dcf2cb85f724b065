"""What `demo up --database` refuses before it creates anything."""

from __future__ import annotations

import pytest

from metastack.demo.database import check_database
from metastack.demo.errors import DemoUsageError

SOCKET = "postgresql+psycopg://postgres@/demo?host=/var/run/postgresql"


@pytest.mark.parametrize(
    ("url", "api_nodes", "in_namespaces", "message"),
    [
        ("", 2, True, "must be PostgreSQL"),
        ("sqlite:////tmp/x.sqlite", 2, True, "not SQLite"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/demo", 2, True, "unix socket directory"),
        ("postgresql+psycopg://postgres@/demo?host=db.example", 1, True, "unix socket directory"),
        ("postgresql+psycopg2://postgres@/demo?host=/var/run/postgresql", 2, True, "psycopg"),
        ("mysql://root@/demo", 1, False, "SQLite or PostgreSQL only"),
        ("postgresql+psycopg://postgres@/?host=/var/run/postgresql", 2, True, "name the database"),
        ("not a url", 1, False, "not a database URL"),
    ],
)
def test_refused(url: str, api_nodes: int, in_namespaces: bool, message: str) -> None:
    with pytest.raises(DemoUsageError, match=message):
        check_database(url, api_nodes, in_namespaces=in_namespaces)


@pytest.mark.parametrize(
    ("url", "api_nodes", "in_namespaces"),
    [
        ("", 1, False),
        ("", 1, True),
        ("sqlite:////tmp/x.sqlite", 1, True),
        (SOCKET, 2, True),
        ("postgresql+psycopg://postgres@/demo", 2, True),  # libpq's default socket
        ("postgresql+psycopg://postgres@127.0.0.1:5432/demo", 1, False),
    ],
)
def test_accepted(url: str, api_nodes: int, in_namespaces: bool) -> None:
    check_database(url, api_nodes, in_namespaces=in_namespaces)
