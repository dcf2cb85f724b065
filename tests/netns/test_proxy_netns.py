"""One proxy process serving DHCP and router namespaces, reached from guest namespaces."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metastack.lab import DhcpNamespace, Guest, Lab, RouterNamespace

from .conftest import METASTACK, Processes, control, curl, start_agent, wait_for_path

pytestmark = pytest.mark.netns

FORGED = (
    "X-Forwarded-For: 10.88.0.99",
    "x-neutron-network-id: net-b",
    "X-NEUTRON-ROUTER-ID: evil",
    "X-Instance-ID: someone-else",
    "x-instance-id-signature: 00",
    "X-Tenant-ID: other-project",
    "Forwarded: for=10.88.0.99",
    "X-OVN-Network-ID: net-b",
)
MD = "http://169.254.169.254/openstack/latest/meta_data.json"


@dataclass
class World:
    lab: Lab
    workdir: Path
    procs: Processes
    agent: subprocess.Popen[bytes]
    proxy: subprocess.Popen[bytes]
    ctl: Path
    dhcp_a: DhcpNamespace
    dhcp_b: DhcpNamespace
    router: RouterNamespace
    guest_a: Guest
    guest_b: Guest
    guest_c: Guest


@pytest.fixture(scope="module")
def world(lab: Lab, workdir: Path, procs: Processes) -> Iterator[World]:
    net_a = lab.network("a", "10.88.0.0/24")
    net_b = lab.network("b", "10.88.0.0/24")  # overlaps net_a on purpose
    dhcp_a, dhcp_b = lab.dhcp(net_a), lab.dhcp(net_b)
    router = lab.router([net_a])
    guest_a = lab.guest(net_a, 5, metadata_via=dhcp_a)
    guest_b = lab.guest(net_b, 5, metadata_via=dhcp_b)
    guest_c = lab.guest(net_a, 6, metadata_via="gateway")
    lab.apply()
    agent = start_agent(procs, workdir)
    ctl = workdir / "ctl.sock"
    argv = [str(METASTACK), "proxy", "--agent-socket", str(workdir / "agent.sock")]
    argv += ["--control-socket", str(ctl), "--upstream-timeout", "1", "--log-level", "warning"]
    proxy = procs.start(argv, workdir / "proxy.log")
    wait_for_path(ctl, proxy)
    yield World(
        lab, workdir, procs, agent, proxy, ctl, dhcp_a, dhcp_b, router, guest_a, guest_b, guest_c
    )
    procs.stop(proxy)
    assert not ctl.exists()


def add(world: World, **spec: object) -> int:
    status, _ = control(world.ctl, "POST", "/listeners", spec)
    return int(status)


@pytest.fixture(scope="module")
def dhcp_listeners(world: World) -> World:
    assert add(world, netns=world.dhcp_a.netns, host="169.254.169.254", network_id="net-a") == 201
    assert add(world, netns=world.dhcp_b.netns, host="169.254.169.254", network_id="net-b") == 201
    return world


def received(body: str) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def test_same_ip_two_networks_each_stamped_with_its_own(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    for guest, network in ((w.guest_a, "net-a"), (w.guest_b, "net-b")):
        status, body = curl(guest.netns, MD, *FORGED)
        assert status == 200, body
        seen = received(body)
        assert seen["x-forwarded-for"] == ["10.88.0.5"]
        assert seen["x-neutron-network-id"] == [network]
        for name in ("x-neutron-router-id", "x-instance-id", "x-instance-id-signature"):
            assert name not in seen
        for name in ("x-tenant-id", "forwarded", "x-ovn-network-id"):
            assert name not in seen
        assert json.loads(body)["path"] == "/openstack/latest/meta_data.json"


def test_router_listener_through_redirect(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    assert add(w, netns=w.router.netns, host="0.0.0.0", port=9697, router_id="router-a") == 201
    status, body = curl(w.guest_c.netns, MD, *FORGED)
    assert status == 200, body
    seen = received(body)
    assert seen["x-forwarded-for"] == ["10.88.0.6"]
    assert seen["x-neutron-router-id"] == ["router-a"]
    assert "x-neutron-network-id" not in seen


def test_ipv6_link_local_listener(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    spec = {"netns": w.dhcp_a.netns, "host": "fe80::a9fe:a9fe", "interface": "tap0"}
    assert add(w, **spec, network_id="net-a") == 201
    status, body = curl(w.guest_a.netns, "http://[fe80::a9fe:a9fe%eth0]/latest/meta-data/")
    assert status == 200, body
    seen = received(body)
    assert seen["x-forwarded-for"][0].startswith("fe80::")
    assert "%" not in seen["x-forwarded-for"][0]
    assert seen["x-neutron-network-id"] == ["net-a"]


def test_listeners_added_and_removed_at_runtime(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    netns = w.dhcp_b.netns
    assert add(w, netns=netns, host="169.254.169.254", network_id="net-b") == 200  # idempotent
    assert add(w, netns=netns, host="169.254.169.254", network_id="net-x") == 409
    status, doc = control(w.ctl, "DELETE", f"/listeners?netns={netns}")
    assert status == 200 and len(doc["removed"]) == 1
    status, _ = curl(w.guest_b.netns, MD, timeout=2)
    assert status == -7  # connection refused: nothing listens in that namespace now
    assert curl(w.guest_a.netns, MD)[0] == 200  # the other namespace is untouched
    assert add(w, netns=netns, host="169.254.169.254", network_id="net-b") == 201
    status, body = curl(w.guest_b.netns, MD)
    assert status == 200 and received(body)["x-neutron-network-id"] == ["net-b"]
    _, doc = control(w.ctl, "GET", "/listeners")
    held = {(s["netns"], s["host"], s.get("port")) for s in doc["listeners"]}
    assert (netns, "169.254.169.254", 80) in held


def test_per_namespace_mode(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    argv = [str(METASTACK), "proxy", "--agent-socket", str(w.workdir / "agent.sock")]
    argv += ["--netns", w.dhcp_b.netns, "--network-id", "net-b", "--bind", "10.88.0.2:8080"]
    proc = w.procs.start(argv, w.workdir / "single.log")
    try:
        deadline = time.monotonic() + 10
        while (status := curl(w.guest_b.netns, "http://10.88.0.2:8080/x", timeout=1)[0]) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, status
            time.sleep(0.1)
    finally:
        w.procs.stop(proc)
    assert proc.returncode == 0


def test_agent_down_is_503_fast_then_recovers(dhcp_listeners: World) -> None:
    w = dhcp_listeners
    assert curl(w.guest_a.netns, MD)[0] == 200  # a pooled connection to the agent exists
    w.procs.stop(w.agent)
    started = time.monotonic()
    status, body = curl(w.guest_a.netns, MD)
    assert status == 503, body
    assert time.monotonic() - started < 1.5  # curl and ip netns exec included
    status, _ = curl(w.guest_a.netns, "http://169.254.169.254/slow?s=0")
    assert status == 503
    w.agent = start_agent(w.procs, w.workdir)
    assert curl(w.guest_a.netns, MD)[0] == 200


def test_agent_slow_is_504(dhcp_listeners: World) -> None:
    status, _ = curl(dhcp_listeners.guest_a.netns, "http://169.254.169.254/slow?s=3")
    assert status == 504
