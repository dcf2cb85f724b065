"""The change feed's bounds and its push: pruning, the 410 signal, NOTIFY on commit only,
revisions gap-free under concurrent writers, migrations under a lock."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from metastack.errors import ChangesPruned, Conflict
from metastack.store.feed import CHANNEL, parse_payload
from metastack.store.migrate import current, upgrade
from metastack.store.schema import ChangeRow, utcnow
from metastack.store.specs import ProjectCreate
from metastack.store.sql import SqlStore


def projects(store: SqlStore, count: int, prefix: str = "p") -> None:
    for n in range(count):
        store.create_project(ProjectCreate(id=f"{prefix}{n}", name="x"))


def age(store: SqlStore, through: int, seconds: float) -> None:
    """Make the changes up to revision `through` look `seconds` old."""
    with Session(store.engine) as session, session.begin():
        session.execute(
            update(ChangeRow)
            .where(ChangeRow.revision <= through)
            .values(created_at=utcnow() - timedelta(seconds=seconds))
        )


def test_pruning_drops_old_changes_and_says_so(sql_store: SqlStore) -> None:
    projects(sql_store, 5)
    age(sql_store, 3, 120)
    assert sql_store.prune_changes(60) == 3
    assert [c.revision for c in sql_store.changes_since(0)] == [4, 5]
    with pytest.raises(ChangesPruned) as gone:
        sql_store.changes_page(0)
    assert (gone.value.oldest_revision, gone.value.revision) == (4, 5)
    with pytest.raises(ChangesPruned):
        sql_store.changes_page(2)  # revision 3 is gone too
    revision, found = sql_store.changes_page(3)  # a follower at 3 misses nothing
    assert (revision, [c.revision for c in found]) == (5, [4, 5])
    assert sql_store.changes_page(5) == (5, [])
    assert sql_store.prune_changes(60) == 0  # nothing more is old enough


def test_a_fully_pruned_feed_still_tells_who_missed_something(sql_store: SqlStore) -> None:
    projects(sql_store, 3)
    age(sql_store, 3, 120)
    assert sql_store.prune_changes(60) == 3
    assert sql_store.changes_since(0) == []
    assert sql_store.changes_page(3) == (3, [])  # up to date: nothing was missed
    with pytest.raises(ChangesPruned) as gone:
        sql_store.changes_page(2)
    assert (gone.value.oldest_revision, gone.value.revision) == (4, 3)
    projects(sql_store, 1, prefix="later")
    assert [c.revision for c in sql_store.changes_page(3)[1]] == [4]


def test_pruning_in_many_processes_at_once_prunes_once(
    database_url: str, sql_store: SqlStore
) -> None:
    projects(sql_store, 20)
    age(sql_store, 15, 120)
    stores = [SqlStore(database_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            pruned = list(pool.map(lambda store: store.prune_changes(60), stores))
    finally:
        for store in stores:
            store.close()
    assert sum(pruned) == 15
    assert [c.revision for c in sql_store.changes_since(0)] == list(range(16, 21))


@pytest.mark.postgres
def test_notify_on_commit_only_in_revision_order(postgres_schema_url: str) -> None:
    import psycopg

    from metastack.store.pgwatch import connect_params

    upgrade(postgres_schema_url)
    store = SqlStore(postgres_schema_url)
    params = connect_params(make_url(postgres_schema_url))
    schema = dict(part.split("=") for part in params["options"].split() if "=" in part)
    with psycopg.connect(autocommit=True, **params) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        try:
            store.create_project(ProjectCreate(id="a", name="a"))
            with pytest.raises(Conflict):  # rolled back: nothing may be announced
                store.create_project(ProjectCreate(id="a", name="again"))
            store.create_project(ProjectCreate(id="b", name="b"))
            notes = [n.payload for n in listener.notifies(timeout=1.0, stop_after=2)]
        finally:
            store.close()
    ours = [parse_payload(payload) for payload in notes]
    assert ours == [(schema["-csearch_path"], 1), (schema["-csearch_path"], 2)]


@pytest.mark.postgres
def test_revisions_are_gap_free_for_a_follower_under_concurrent_writers(
    postgres_schema_url: str,
) -> None:
    """A follower reading the feed while 6 writers commit never sees revision N+1 before N,
    so following from the last revision seen never skips one."""
    upgrade(postgres_schema_url)
    writers = [SqlStore(postgres_schema_url) for _ in range(6)]
    reader = SqlStore(postgres_schema_url)
    done = threading.Event()
    problems: list[Any] = []
    seen: list[int] = []

    def follow() -> None:
        since = 0
        while not done.is_set() or since < 6 * 25:
            _, found = reader.changes_page(since)
            numbers = [c.revision for c in found]
            if numbers and numbers != list(range(since + 1, since + 1 + len(numbers))):
                problems.append((since, numbers[:5]))
                return
            since = numbers[-1] if numbers else since
            seen.extend(numbers)

    def write(store: SqlStore, index: int) -> None:
        for n in range(25):
            store.create_project(ProjectCreate(id=f"w{index}-{n}", name="x"))

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(write, writers, range(6)))
    finally:
        done.set()
        follower.join(30)
        for store in [*writers, reader]:
            store.close()
    assert problems == []
    assert seen == list(range(1, 151))


@pytest.mark.postgres
def test_migrations_at_once_on_an_empty_database(postgres_database_url: str) -> None:
    """Several processes upgrading an empty database at once: one creates the schema, the
    others wait for its lock and find it at head."""
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: upgrade(postgres_database_url), range(4)))
    assert current(postgres_database_url) is not None
    store = SqlStore(postgres_database_url)
    try:
        store.create_project(ProjectCreate(name="works"))
        assert store.current_revision() == 1
    finally:
        store.close()
    assert time.monotonic() - started < 60
