"""The netagent in real namespaces: DHCP guest, both metadata paths, restart, respawn, removal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from metastack.proxy.client import ProxyClient

from .conftest import Run, list_netns, sh, wait_until

pytestmark = pytest.mark.netns
CIDR = "10.93.0.0/24"
GUEST_MAC = "fa:16:3e:00:93:05"
UDHCPC_SCRIPT = """#!/bin/sh
# Sets the address and the routes only; never touches /etc/resolv.conf.
env > "{dump}.$1"
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${{mask:-24}}" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${{router%% *}}" dev "$interface"
    fi ;;
esac
"""


@pytest.fixture(scope="module")
def topo(run: Run) -> dict[str, Any]:
    """Project, network (MTU 1450), subnet, router with an interface, a guest port."""
    api = run.api
    api.ok("POST", "/v1/projects", {"id": "p1", "name": "p1"})
    net = api.ok("POST", "/v1/networks", {"project_id": "p1", "name": "n1", "mtu": 1450})
    subnet = api.ok(
        "POST",
        "/v1/subnets",
        {"network_id": net["id"], "cidr": CIDR, "dns_nameservers": ["192.0.2.53"]},
    )
    router = api.ok("POST", "/v1/routers", {"project_id": "p1", "name": "r1"})
    started = time.monotonic()
    run.start_netagent("netagent-1.log")
    api.ok("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]})
    port = api.ok(
        "POST",
        "/v1/ports",
        {"network_id": net["id"], "mac_address": GUEST_MAC, "device_id": "vm1"},
    )
    return {
        "net": net["id"],
        "subnet": subnet["id"],
        "router": router["id"],
        "guest_ip": port["fixed_ips"][0]["ip_address"],
        "guest_port": port["id"],
        "started": started,
    }


def _held(run: Run) -> list[dict[str, Any]]:
    try:
        status, document = ProxyClient(str(run.proxy_socket)).listeners()
    except Exception:
        return []
    return list(document["listeners"]) if status == 200 else []


def _dhcp_ns(run: Run, topo: dict[str, Any]) -> str:
    return f"{run.prefix}qdhcp-{topo['net']}"


def _router_ns(run: Run, topo: dict[str, Any]) -> str:
    return f"{run.prefix}qrouter-{topo['router']}"


def _pidfile(run: Run, topo: dict[str, Any]) -> Path:
    return run.state / "dhcp" / str(topo["net"]) / "pid"


def _dnsmasq_pid(run: Run, topo: dict[str, Any]) -> int | None:
    try:
        pid = int(_pidfile(run, topo).read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError):
        return None
    return pid if state != "Z" else None


def _curl(netns: str, path: str = "/openstack/latest/meta_data.json") -> dict[str, str] | None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-s", "-m", "3", f"http://169.254.169.254{path}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode != 0:
        return None
    import json

    try:
        return {k.lower(): v for k, v in json.loads(done.stdout)["headers"]}
    except (ValueError, KeyError):
        return None


def test_brings_up_dhcp_and_router_namespaces(run: Run, topo: dict[str, Any]) -> None:
    dhcp_ns, router_ns = _dhcp_ns(run, topo), _router_ns(run, topo)
    wanted = {(dhcp_ns, "169.254.169.254", 80), (router_ns, "0.0.0.0", 9697)}
    wait_until(
        lambda: wanted <= {(h["netns"], h["host"], h["port"]) for h in _held(run)},
        20,
        "both listeners",
    )
    wait_until(lambda: _dnsmasq_pid(run, topo), 10, "dnsmasq")
    print(f"\nnetwork+router up (listeners held) in {time.monotonic() - topo['started']:.2f}s")
    assert {dhcp_ns, router_ns} <= set(list_netns())
    dhcp_addrs = sh("ip", "-n", dhcp_ns, "-4", "addr", "show")
    assert "169.254.169.254/32" in dhcp_addrs
    assert re.search(r"inet 10\.93\.0\.\d+/24", dhcp_addrs)
    assert "mtu 1450" in sh("ip", "-n", dhcp_ns, "link", "show")
    assert "inet 10.93.0.1/24" in sh("ip", "-n", router_ns, "-4", "addr", "show")
    rules = sh("ip", "netns", "exec", router_ns, "iptables-save")
    assert "-j REDIRECT --to-ports 9697" in rules
    assert "--dport 9697 -j DROP" in rules
    assert "-j MARK --set-xmark 0x1/0xffff" in rules
    opts = (run.state / "dhcp" / topo["net"] / "opts").read_text()
    assert "option:classless-static-route,169.254.169.254/32," in opts
    hosts = (run.state / "dhcp" / topo["net"] / "host").read_text()
    assert f"{GUEST_MAC},host-{topo['guest_ip'].replace('.', '-')},{topo['guest_ip']}" in hosts


@pytest.fixture(scope="module")
def guest(run: Run, topo: dict[str, Any]) -> str:
    """A guest namespace on the network's bridge that configures itself by DHCP."""
    name = f"{run.prefix}g1"
    bridge = f"ms-br-{topo['net'][:8]}"
    sh("ip", "netns", "add", name)
    run.netns.insert(1, name)
    sh(
        "ip",
        "-n",
        run.fabric,
        "link",
        "add",
        "gv1",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        name,
    )
    sh("ip", "-n", run.fabric, "link", "set", "gv1", "master", bridge, "up")
    sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", name, "link", "set", "eth0", "address", GUEST_MAC, "up")
    script = run.work / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT.format(dump=run.work / "dhcp-env"))
    script.chmod(0o755)
    wait_until(lambda: _dnsmasq_pid(run, topo), 20, "dnsmasq")
    sh(
        "ip",
        "netns",
        "exec",
        name,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "10",
        "-T",
        "1",
        "-O",
        "staticroutes",
        "-O",
        "mtu",
        "-s",
        str(script),
    )
    return name


def test_guest_gets_address_routes_and_options(run: Run, topo: dict[str, Any], guest: str) -> None:
    addrs = sh("ip", "-n", guest, "-4", "addr", "show", "eth0")
    assert f"inet {topo['guest_ip']}/24" in addrs
    routes = sh("ip", "-n", guest, "-4", "route", "show")
    dhcp_ip = re.search(r"169\.254\.169\.254 via (\S+)", routes)
    assert dhcp_ip and dhcp_ip.group(1) != "10.93.0.1", routes  # force_metadata: the DHCP port
    assert "default via 10.93.0.1" in routes
    env = (run.work / "dhcp-env.bound").read_text()
    assert "mtu=1450" in env
    assert "dns=192.0.2.53" in env


def test_both_metadata_paths(run: Run, topo: dict[str, Any], guest: str) -> None:
    headers = wait_until(lambda: _curl(guest), 10, "metadata via the DHCP namespace")
    assert headers["x-neutron-network-id"] == topo["net"]
    assert headers["x-forwarded-for"] == topo["guest_ip"]
    sh("ip", "-n", guest, "route", "del", "169.254.169.254/32")
    try:
        headers = wait_until(lambda: _curl(guest), 10, "metadata via the router")
        assert headers["x-neutron-router-id"] == topo["router"]
        assert "x-neutron-network-id" not in headers
        assert headers["x-forwarded-for"] == topo["guest_ip"]
    finally:
        dhcp_ip = sh("ip", "-n", _dhcp_ns(run, topo), "-4", "-o", "addr", "show")
        ip = re.search(r"inet (10\.93\.0\.\d+)/24", dhcp_ip)
        assert ip
        sh("ip", "-n", guest, "route", "add", "169.254.169.254/32", "via", ip.group(1))


def _netns_ids(names: list[str]) -> dict[str, int]:
    return {name: os.stat(f"/run/netns/{name}").st_ino for name in names}


def test_restart_touches_nothing_and_serves_throughout(
    run: Run, topo: dict[str, Any], guest: str
) -> None:
    names = [_dhcp_ns(run, topo), _router_ns(run, topo)]
    before = _netns_ids(names)
    pid = _dnsmasq_pid(run, topo)
    failures: list[int] = []
    done = threading.Event()
    count = 0

    def loop() -> None:
        nonlocal count
        while not done.is_set():
            if _curl(guest) is None:
                failures.append(count)
            count += 1

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        time.sleep(0.5)
        run.stop("netagent")
        time.sleep(0.5)
        run.start_netagent("netagent-2.log")
        log = run.work / "netagent-2.log"
        wait_until(lambda: "full pass in" in log.read_text(), 20, "first pass after restart")
        time.sleep(1.0)
    finally:
        done.set()
        worker.join(15)
    text = log.read_text()
    mutations = [
        line
        for line in text.splitlines()
        if re.search(r"exec ip .*-batch|iptables-restore|exec ip netns exec \S+ dnsmasq", line)
    ]
    assert not mutations, mutations
    assert re.search(r"full pass in [\d.]+s: 0 steps", text)
    assert "listeners unchanged" in text
    assert _netns_ids(names) == before
    assert _dnsmasq_pid(run, topo) == pid
    assert count > 10 and not failures, f"{len(failures)} of {count} requests failed"


def test_new_port_reloads_dnsmasq_without_restart(run: Run, topo: dict[str, Any]) -> None:
    pid = _dnsmasq_pid(run, topo)
    created = time.monotonic()
    port = run.api.ok(
        "POST",
        "/v1/ports",
        {"network_id": topo["net"], "mac_address": "fa:16:3e:00:93:06", "device_id": "vm2"},
    )
    hosts = run.state / "dhcp" / str(topo["net"]) / "host"
    wait_until(lambda: "fa:16:3e:00:93:06" in hosts.read_text(), 10, "the new static lease")
    print(f"\nnew port in dnsmasq's hosts file {time.monotonic() - created:.3f}s after creation")
    assert _dnsmasq_pid(run, topo) == pid
    log = (run.work / "netagent-2.log").read_text()
    assert f"reloaded ['{topo['net']}']" in log  # SIGHUP, not a restart
    run.api.ok("DELETE", f"/v1/ports/{port['id']}")
    wait_until(lambda: "fa:16:3e:00:93:06" not in hosts.read_text(), 10, "the lease removed")
    assert _dnsmasq_pid(run, topo) == pid


def test_killed_dnsmasq_is_back_within_two_seconds(run: Run, topo: dict[str, Any]) -> None:
    pid = _dnsmasq_pid(run, topo)
    assert pid
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    new = wait_until(
        lambda: (p := _dnsmasq_pid(run, topo)) and p != pid and p, 2.0, "dnsmasq respawn", 0.01
    )
    print(f"\ndnsmasq respawned in {time.monotonic() - killed:.3f}s (pid {pid} -> {new})")


def test_dropped_listener_is_back_within_two_seconds(
    run: Run, topo: dict[str, Any], guest: str
) -> None:
    client = ProxyClient(str(run.proxy_socket))
    client.remove(_dhcp_ns(run, topo))
    dropped = time.monotonic()
    wait_until(
        lambda: any(h["netns"] == _dhcp_ns(run, topo) for h in _held(run)), 2.0, "listener", 0.01
    )
    print(f"\nlistener re-PUT in {time.monotonic() - dropped:.3f}s")
    run.stop("proxy")
    run.start_proxy()
    restarted = time.monotonic()
    wait_until(lambda: len(_held(run)) >= 2, 2.0, "listeners after proxy restart", 0.01)
    print(f"listeners back {time.monotonic() - restarted:.3f}s after the proxy restarted")
    assert wait_until(lambda: _curl(guest), 5, "metadata after proxy restart")


def test_deleting_the_network_removes_everything(run: Run, topo: dict[str, Any]) -> None:
    api = run.api
    dhcp_ns = _dhcp_ns(run, topo)
    api.ok("DELETE", f"/v1/routers/{topo['router']}/interfaces/{topo['subnet']}")
    api.ok("DELETE", f"/v1/ports/{topo['guest_port']}")
    deadline = time.monotonic() + 10
    # The control API keeps a network with ports; the agent may recreate its DHCP port
    # between our two calls, so retry the pair.
    while True:
        for port in api.ok("GET", f"/v1/ports?network_id={topo['net']}")["ports"]:
            api.call("DELETE", f"/v1/ports/{port['id']}")
        status, _ = api.call("DELETE", f"/v1/networks/{topo['net']}")
        if status == 204 or time.monotonic() > deadline:
            break
    assert status == 204
    deleted = time.monotonic()
    wait_until(lambda: dhcp_ns not in list_netns(), 10, "qdhcp namespace removed")
    print(f"\nnetwork removed in {time.monotonic() - deleted:.2f}s")
    assert not any(h["netns"] == dhcp_ns for h in _held(run))
    assert not (run.state / "dhcp" / topo["net"]).exists()
    api.ok("DELETE", f"/v1/routers/{topo['router']}")
    wait_until(lambda: _router_ns(run, topo) not in list_netns(), 10, "qrouter removed")
    assert _held(run) == []
