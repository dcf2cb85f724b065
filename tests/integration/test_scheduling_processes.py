"""Several `metastack api` processes (two workers each) on one database schedule at the same
time: agents registering, networks and routers created, agents dying and coming back, the
periodic pass of every worker. No network or router ever has more agents than asked."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from metastack.store.schema import DhcpBindingRow, L3BindingRow
from metastack.store.sql import SqlStore

METASTACK = str(Path(sys.executable).with_name("metastack"))
LISTEN_RE = re.compile(r"control API listening on ([\d.]+):(\d+)")
PROCESSES = 3
PER_NETWORK = PER_ROUTER = 2
DOWN_TIME = 2.0


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture
def apis(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """PROCESSES control APIs (2 workers each) on `database_url`; their base URLs."""
    config = tmp_path / "api.toml"
    config.write_text(
        "[api]\n"
        f"database_url = {json.dumps(database_url)}\n"
        'control_listen = "127.0.0.1:0"\n'
        'enabled_apis = ["control"]\n'
        "workers = 2\n"
        f"agent_down_time = {DOWN_TIME}\n"
        f"dhcp_agents_per_network = {PER_NETWORK}\n"
        f"max_l3_agents_per_router = {PER_ROUTER}\n"
    )
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for index in range(PROCESSES):
            log = tmp_path / f"api-{index}.log"
            with log.open("wb") as out:
                argv = [METASTACK, "api", "--config", str(config)]
                started.append((subprocess.Popen(argv, stdout=out, stderr=out), log))
        bases = []
        for process, log in started:
            deadline = time.monotonic() + 30
            while not (found := LISTEN_RE.search(log.read_text())):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            bases.append(f"http://{found.group(1)}:{found.group(2)}")
        yield bases
        for _, log in started:
            assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Heartbeats:
    """Reports the `alive` agents every 0.3 s, each time through another API process."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.alive: set[str] = set()
        self.failures: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            for host in sorted(self.alive):
                status, body = call(random.choice(self.bases), "POST", "/v1/agents", {"host": host})
                if status != 200:
                    self.failures.append((host, status, body))


def bindings(
    store: SqlStore,
) -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]]:
    """Every (agent, slot) of every network and router, read straight from the tables."""

    def read(
        row_type: type[DhcpBindingRow] | type[L3BindingRow],
    ) -> dict[str, list[tuple[str, int]]]:
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        column = DhcpBindingRow.network_id if row_type is DhcpBindingRow else L3BindingRow.router_id
        found: dict[str, list[tuple[str, int]]] = {}
        with Session(store.engine) as session:
            for target, agent, index in session.execute(
                select(column, row_type.agent_id, row_type.binding_index)
            ):
                found.setdefault(target, []).append((agent, index))
        return found

    return read(DhcpBindingRow), read(L3BindingRow)


def never_too_many(store: SqlStore) -> Callable[[], None]:
    def check() -> None:
        networks, routers = bindings(store)
        for target, bound in [*networks.items(), *routers.items()]:
            assert len(bound) <= PER_NETWORK, (target, bound)
            assert len({agent for agent, _ in bound}) == len(bound), (target, bound)
            assert len({index for _, index in bound}) == len(bound), (target, bound)

    return check


def settle(check: Callable[[], bool], guard: Callable[[], None], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        guard()
        if check():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_concurrent_api_processes_never_schedule_twice(apis: list[str], database_url: str) -> None:
    store = SqlStore(database_url)
    guard = never_too_many(store)
    hosts = [f"node-{i}" for i in range(4)]
    try:
        with Heartbeats(apis) as beats, ThreadPoolExecutor(16) as pool:
            # agents register while networks and routers are created, all at once, through
            # every process: each is a scheduling trigger
            jobs = [("POST", "/v1/agents", {"host": host}) for host in hosts]
            jobs += [("POST", "/v1/networks", {"project_id": "p"}) for _ in range(16)]
            jobs += [("POST", "/v1/routers", {"project_id": "p"}) for _ in range(8)]
            random.shuffle(jobs)
            answers = list(pool.map(lambda job: call(random.choice(apis), *job), jobs))
            assert all(status in (200, 201) for status, _ in answers), answers
            beats.alive.update(hosts)
            network_ids = [b["id"] for s, b in answers if s == 201 and "mtu" in b]
            router_ids = [b["id"] for s, b in answers if s == 201 and "interfaces" in b]
            assert (len(network_ids), len(router_ids)) == (16, 8)
            guard()

            def complete(live: set[str]) -> Callable[[], bool]:
                ids = {a["host"]: a["id"] for a in call(apis[0], "GET", "/v1/agents")[1]["agents"]}
                wanted = {ids[host] for host in live}

                def check() -> bool:
                    networks, routers = bindings(store)
                    return all(
                        len(found.get(target, [])) == PER_NETWORK
                        and {agent for agent, _ in found.get(target, [])} <= wanted
                        for found, targets in ((networks, network_ids), (routers, router_ids))
                        for target in targets
                    )

                return check

            settle(complete(set(hosts)), guard, 20, "every object on two agents")

            # two agents die: the periodic pass of six workers moves their share, once
            beats.alive.difference_update(hosts[2:])
            settle(complete(set(hosts[:2])), guard, 10 * DOWN_TIME, "failover to the live two")

            # one comes back through every process at once: it gets nothing twice
            back = list(
                pool.map(lambda base: call(base, "POST", "/v1/agents", {"host": hosts[2]}), apis)
            )
            assert all(status == 200 for status, _ in back), back
            beats.alive.add(hosts[2])
            end = time.monotonic() + 2 * DOWN_TIME
            while time.monotonic() < end:
                guard()
                time.sleep(0.1)
            assert complete(set(hosts[:3]))()
            assert beats.failures == []
        routers = call(apis[1], "GET", "/v1/routers")[1]["routers"]
        assert sorted(r["vrid"] for r in routers) == list(range(1, 9))  # unique in the project
        assert all(r["ha"] for r in routers)
    finally:
        store.close()
