"""`metastack demo` end to end through its CLI: DHCP-booted guests, both paths, faults, cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.democli import (
    URL,
    assert_nothing_left,
    curl,
    demo,
    netns_list,
    searchable_tmp,
)
from support.needs import missing

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PINNED_KEYS = {"name", "uuid", "namespace", "network_id", "ip", "path", "cloud_init_ok"}


def why_not() -> str | None:
    return missing("the demo", ("ip", "curl", "busybox", "dnsmasq"))


@dataclass
class Demo:
    workdir: Path
    guests: list[dict[str, Any]]
    state: dict[str, Any]

    @property
    def prefix(self) -> str:
        return str(self.state["prefix"])

    def curl(self, namespace: str, url: str = URL) -> tuple[str, str]:
        return curl(namespace, url)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        token = (self.workdir / "token").read_text().strip()
        request = urllib.request.Request(
            self.state["control_url"] + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def dnsmasq_pids(self) -> dict[str, int]:
        pids = {}
        for pidfile in (self.workdir / "netagent" / "dhcp").glob("*/pid"):
            pids[pidfile.parent.name] = int(pidfile.read_text().strip())
        return pids

    def by_path(self, path: str) -> dict[str, Any]:
        return next(g for g in self.guests if g["path"] == path)


@pytest.fixture(scope="module")
def up() -> Iterator[Demo]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # dnsmasq runs as nobody: the state must not sit under pytest's private tmp folders
    workdir = searchable_tmp() / "state"
    result = demo(
        "up", "--instances", "4", "--json", "--control-port", "0", "--metadata-port", "0",
        workdir=workdir, check=False,
    )  # fmt: skip
    state = json.loads((workdir / "demo.json").read_text())
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        yield Demo(workdir, json.loads(result.stdout), state)
    finally:
        demo("down", workdir=workdir)
        assert_nothing_left(state["prefix"], workdir)
        workdir.parent.rmdir()


def test_every_guest_booted_by_dhcp_and_cloud_init(up: Demo) -> None:
    assert len(up.guests) == 4
    for guest in up.guests:
        assert set(guest) >= PINNED_KEYS, guest
        assert guest["cloud_init_ok"] is True, guest
        assert guest["namespace"] in netns_list()
    assert {g["path"] for g in up.guests} == {"dhcp", "router"}
    assert len({g["uuid"] for g in up.guests}) == 4


def test_same_addresses_in_both_projects_each_served_its_own(up: Demo) -> None:
    by_ip: dict[str, list[dict[str, Any]]] = {}
    for guest in up.guests:
        by_ip.setdefault(guest["ip"], []).append(guest)
    shared = [guests for guests in by_ip.values() if len(guests) > 1]
    assert shared, "the demo should give two guests the same address"
    for guests in shared:
        assert len({g["network_id"] for g in guests}) == len(guests)
        for guest in guests:
            code, body = up.curl(
                guest["namespace"], "http://169.254.169.254/openstack/latest/meta_data.json"
            )
            assert code == "200"
            assert json.loads(body)["uuid"] == guest["uuid"]


def test_status_reports_the_same_guests_and_the_host_as_both_nodes(up: Demo) -> None:
    result = demo("status", "--json", workdir=up.workdir)
    document = json.loads(result.stdout)
    assert set(document) == {"guests", "nodes"}
    assert [g["uuid"] for g in document["guests"]] == [g["uuid"] for g in up.guests]
    api, network = document["nodes"]
    networks = sorted({g["network_id"] for g in up.guests})
    assert api == {
        "name": "api-1",
        "role": "api",
        "namespace": None,
        "address": "127.0.0.1",
        "up": True,
        "serves": {"networks": [], "routers": []},
    }
    assert {k: v for k, v in network.items() if k != "serves"} == {
        "name": "net-1",
        "role": "network",
        "namespace": None,
        "address": "127.0.0.1",
        "up": True,
    }
    assert sorted(network["serves"]["networks"]) == networks
    assert len(network["serves"]["routers"]) == 2


def test_netagent_restart_fails_no_request_and_changes_nothing(up: Demo) -> None:
    namespaces = {n for n in netns_list() if n.startswith(up.prefix)}
    dnsmasq_before = up.dnsmasq_pids()
    guests = [up.by_path("dhcp"), up.by_path("router")]
    codes: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for guest in guests:
                codes.append(up.curl(guest["namespace"])[0])

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        time.sleep(0.5)
        demo("restart", "netagent", workdir=up.workdir)
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join()
    assert len(codes) > 20
    assert set(codes) == {"200"}, codes
    assert up.dnsmasq_pids() == dnsmasq_before
    assert {n for n in netns_list() if n.startswith(up.prefix)} == namespaces


def wait_for_200(up: Demo, namespace: str, within: float) -> float:
    started = time.monotonic()
    while up.curl(namespace)[0] != "200":
        assert time.monotonic() - started < within, f"not served again within {within} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_killed_proxy_is_back_within_two_seconds(up: Demo) -> None:
    pidfile = up.workdir / "netagent" / "proxy.pid"
    old = int(pidfile.read_text())
    os.kill(old, signal.SIGKILL)
    for path in ("dhcp", "router"):
        wait_for_200(up, up.by_path(path)["namespace"], 2.0)
    assert int(pidfile.read_text()) != old


def test_killed_dnsmasq_is_back_within_two_seconds(up: Demo) -> None:
    network, old = next(iter(up.dnsmasq_pids().items()))
    os.kill(old, signal.SIGKILL)
    started = time.monotonic()
    while True:
        new = up.dnsmasq_pids().get(network)
        if new and new != old and Path(f"/proc/{new}/cmdline").read_bytes():
            break
        assert time.monotonic() - started < 2.0, "dnsmasq was not restarted within 2 s"
        time.sleep(0.05)


def test_deleting_a_network_removes_its_namespace(up: Demo) -> None:
    network = up.control("POST", "/v1/networks", {"name": "doomed", "project_id": "demo-a"})
    up.control(
        "POST",
        "/v1/subnets",
        {"network_id": network["id"], "cidr": "10.99.0.0/24", "ip_version": 4},
    )
    namespace = f"{up.prefix}qdhcp-{network['id']}"
    deadline = time.monotonic() + 10
    while namespace not in netns_list():
        assert time.monotonic() < deadline, "the new network's DHCP namespace did not appear"
        time.sleep(0.1)
    up.control("DELETE", f"/v1/networks/{network['id']}")
    deadline = time.monotonic() + 10
    while namespace in netns_list():
        assert time.monotonic() < deadline, "the deleted network's namespace is still there"
        time.sleep(0.1)


def test_down_after_a_failed_up_leaves_nothing() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    workdir = searchable_tmp() / "failed"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = demo("up", "--control-port", str(port), workdir=workdir, check=False)
    assert result.returncode == 1
    state = json.loads((workdir / "demo.json").read_text())
    assert state["phase"] == "failed"
    demo("down", workdir=workdir)
    assert_nothing_left(state["prefix"], workdir)
    workdir.parent.rmdir()
