"""`metastack api` processes on one PostgreSQL database: read-your-writes across workers and
nodes, a killed LISTEN connection, migrations when several start at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.api_process import ApiProcess, serving, start, stop, write_config

pytestmark = pytest.mark.postgres

ROUNDS = 300
READ_DELAY = 0.005  # a read starts this long after the update was acknowledged


@contextmanager
def api_processes(
    tmp_path: Path, database_url: str, count: int, **extra: str
) -> Iterator[list[ApiProcess]]:
    """`count` API processes on the same database, started at once."""
    processes = []
    try:
        for index in range(count):
            config = write_config(tmp_path / f"api{index}.toml", database_url, **extra)
            processes.append((start(config, tmp_path / f"api{index}.log"), index))
        yield [serving(process, tmp_path / f"api{index}.log") for process, index in processes]
    finally:
        for process, _ in processes:
            stop(process)


def boot(api: ApiProcess, name: str) -> dict[str, Any]:
    network = api.ok("POST", "/v1/networks", {"project_id": "p", "name": name})
    api.ok("POST", "/v1/subnets", {"network_id": network["id"], "cidr": "10.0.0.0/24"})
    body = {"name": name, "project_id": "p", "networks": [{"network_id": network["id"]}]}
    instance: dict[str, Any] = api.ok("POST", "/v1/instances", body)
    return instance


@contextmanager
def background_reads(apis: list[ApiProcess], instance: dict[str, Any]) -> Iterator[list[int]]:
    """Four threads reading another instance's document as fast as they can."""
    done = threading.Event()
    counts = [0] * 4

    def read(index: int) -> None:
        while not done.is_set():
            apis[index % len(apis)].meta_data(instance)
            counts[index] += 1

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(read, index) for index in range(4)]
        try:
            yield counts
        finally:
            done.set()
            for future in futures:
                future.result()


def stale_reads(writer: ApiProcess, readers: list[ApiProcess], instance: dict[str, Any]) -> int:
    """ROUNDS metadata updates on `writer`, each followed READ_DELAY later by a read on every
    one of `readers` (a new connection: any worker); how many reads returned the old value."""
    stale = 0
    path = f"/v1/instances/{instance['uuid']}"
    for n in range(ROUNDS):
        writer.ok("PATCH", path, {"metadata": {"round": str(n)}})
        time.sleep(READ_DELAY)
        for reader in readers:
            if reader.meta_data(instance)["meta"].get("round") != str(n):
                stale += 1
    return stale


def test_reads_after_an_acknowledged_update_are_fresh_on_every_worker_and_node(
    tmp_path: Path, postgres_database_url: str
) -> None:
    with api_processes(tmp_path, postgres_database_url, 2, workers="2") as (node_a, node_b):
        instance = boot(node_a, "watched")
        other = boot(node_a, "busy")
        started = time.monotonic()
        with background_reads([node_a, node_b], other) as load:
            stale = stale_reads(node_a, [node_a, node_b], instance)
        seconds = time.monotonic() - started
        print(
            f"\n{ROUNDS} updates, each read {READ_DELAY * 1000:.0f} ms after its ack on the "
            f"writing node and on another (2 workers each), beside {sum(load)} background "
            f"reads in {seconds:.1f} s: {stale} stale"
        )
        assert sum(load) > ROUNDS  # the reads ran under load
        assert stale == 0


def listeners(database_url: str) -> set[int]:
    """Backend pids of the API workers' LISTEN connections to this database."""
    from metastack.store.pgwatch import LISTENER_NAME

    name = make_url(database_url).database
    engine = create_engine(database_url, pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :db"
                    " AND application_name = :app"
                ),
                {"db": name, "app": LISTENER_NAME},
            )
            return {int(row[0]) for row in rows}
    finally:
        engine.dispose()


def terminate(database_url: str, pids: set[int]) -> None:
    engine = create_engine(database_url, pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            for pid in pids:
                assert conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                ).scalar()
    finally:
        engine.dispose()


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not true after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def long_poll_wakes(api: ApiProcess) -> float:
    """Seconds from a write to the answer of a long poll waiting for it (started first)."""
    revision = api.ok("GET", "/v1/changes?limit=1")["revision"]
    answers: list[tuple[float, Any]] = []

    def poll_once() -> None:
        page = api.ok("GET", f"/v1/changes?since={revision}&wait=20")
        answers.append((time.monotonic(), page))

    poll = threading.Thread(target=poll_once)
    poll.start()
    time.sleep(0.3)  # the poll is waiting
    assert not answers
    written = time.monotonic()
    api.ok("POST", "/v1/projects", {"name": "wake"})
    poll.join(25)
    answered, page = answers[0]
    assert [c["resource"] for c in page["changes"]] == ["project"]
    return answered - written


@contextmanager
def listeners_kept_down(database_url: str) -> Iterator[list[int]]:
    """Terminate every LISTEN backend of the API workers as soon as it appears, until the
    block ends; yields the list of pids terminated so far."""
    done = threading.Event()
    killed: list[int] = []

    def kill() -> None:
        while not done.is_set():
            found = listeners(database_url)
            terminate(database_url, found)
            killed.extend(found)
            time.sleep(0.01)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        done.set()
        killer.join(10)


def test_reads_stay_fresh_and_polls_wake_while_listen_connections_are_down(
    tmp_path: Path, postgres_database_url: str
) -> None:
    with api_processes(tmp_path, postgres_database_url, 1, workers="2") as (api,):
        instance = boot(api, "watched")
        wait_for(lambda: len(listeners(postgres_database_url)) == 2, 10)  # one per worker
        pushed = long_poll_wakes(api)
        path = f"/v1/instances/{instance['uuid']}"
        with listeners_kept_down(postgres_database_url) as killed:
            wait_for(lambda: len(killed) >= 2, 10)
            for n in range(30):
                api.ok("PATCH", path, {"metadata": {"round": str(n)}})
                time.sleep(READ_DELAY)
                assert api.meta_data(instance)["meta"].get("round") == str(n)
            polled = long_poll_wakes(api)  # no push: the workers poll meanwhile
        back = wait_for(lambda: len(listeners(postgres_database_url) - set(killed)) == 2, 10)
        pushed_again = long_poll_wakes(api)
        log = api.log.read_text()
        assert log.count("revision push lost") >= 2, log
        assert log.count("revision push live") >= 4, log  # each worker: at start, then again
        print(
            f"\nlong poll woke {pushed * 1000:.0f} ms after a write; with every LISTEN "
            f"backend terminated as it appeared ({len(killed)} times): 30 reads 5 ms after "
            f"their update all fresh, a long poll woke {polled * 1000:.0f} ms after a write; "
            f"listeners back {back:.2f} s later, a long poll then woke "
            f"{pushed_again * 1000:.0f} ms after a write"
        )
        assert pushed < 1.0 and polled < 1.0 and pushed_again < 1.0


def test_three_api_processes_started_at_once_on_an_empty_database(
    tmp_path: Path, postgres_database_url: str
) -> None:
    with api_processes(tmp_path, postgres_database_url, 3, workers="1") as apis:
        created = [
            api.ok("POST", "/v1/projects", {"name": f"from-{n}"}) for n, api in enumerate(apis)
        ]
        for api in apis:
            names = {project["name"] for project in api.ok("GET", "/v1/projects")["projects"]}
            assert names == {project["name"] for project in created}
            assert "Traceback" not in api.log.read_text()
