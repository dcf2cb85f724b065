"""Two netagents (two nodes) sharing one fabric: one segment per network, both DHCP ports on it.

Both start at once on a fabric that does not exist yet, so each may find the namespace or
a bridge made by the other since it looked; neither pass may fail for it. Removing one
node's namespaces leaves the other's ports and the shared bridge in place.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import METASTACK, Run, list_netns, sh

pytestmark = pytest.mark.netns
CIDR = "10.94.0.0/24"


def _config(run: Run, node: str, fabric: str) -> Path:
    state = run.state / node
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # dnsmasq (nobody) reads its files below it
    path = run.work / f"netagent-{node}.toml"
    path.write_text(
        "[netagent]\n"
        f'control_url = "{run.api.url}"\n'
        f'host = "{node}"\n'
        f'namespace_prefix = "{run.prefix}{node}-"\n'
        f'fabric_netns = "{fabric}"\n'
        f'state_path = "{state}"\n'
        f'proxy_control_socket = "{run.work / "no-proxy.sock"}"\n'
    )
    return path


def _netagent(config: Path, *flags: str) -> subprocess.Popen[bytes]:
    with config.with_suffix(".log").open("ab") as log:
        return subprocess.Popen(
            [str(METASTACK), "netagent", "--config", str(config), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _bridge_members(fabric: str, bridge: str) -> set[str]:
    out = sh("ip", "-n", fabric, "-j", "link", "show", "master", bridge)
    return {link["ifname"] for link in json.loads(out)}


def _dhcp_ports(run: Run, network_id: str) -> dict[str, dict[str, Any]]:
    ports = run.api.ok("GET", f"/v1/ports?network_id={network_id}")["ports"]
    return {p["device_id"]: p for p in ports if p["device_owner"] == "network:dhcp"}


def test_two_nodes_share_the_tenant_bridge(run: Run) -> None:
    api = run.api
    # Both nodes serve the network: two DHCP agents per network (`[api]
    # dhcp_agents_per_network`), as a site with DHCP on two nodes sets it.
    api.store.scheduling = dataclasses.replace(api.store.scheduling, dhcp_agents_per_network=2)
    api.ok("POST", "/v1/projects", {"id": "p1", "name": "p1"})
    network = api.ok("POST", "/v1/networks", {"project_id": "p1", "name": "shared"})
    api.ok("POST", "/v1/subnets", {"network_id": network["id"], "cidr": CIDR})
    fabric = f"{run.prefix}shared"
    configs = {node: _config(run, node, fabric) for node in ("node-a", "node-b")}
    try:
        first = {node: _netagent(config, "--once") for node, config in configs.items()}
        for node, proc in first.items():
            code = proc.wait(60)
            log = configs[node].with_suffix(".log").read_text()
            assert code == 0, f"{node}: {log[-3000:]}"
        bridge = f"ms-br-{network['id'][:8]}"
        ports = _dhcp_ports(run, network["id"])
        assert set(ports) == {"dhcp-node-a", "dhcp-node-b"}
        taps = {node: f"tap{ports[f'dhcp-{node}']['id'][:11]}" for node in configs}
        assert _bridge_members(fabric, bridge) >= set(taps.values())
        for node in configs:
            assert f"{run.prefix}{node}-qdhcp-{network['id']}" in list_netns()
        # node-a goes: its namespace and tap with it; node-b's and the bridge stay.
        assert _netagent(configs["node-a"], "--cleanup").wait(60) == 0
        assert f"{run.prefix}node-a-qdhcp-{network['id']}" not in list_netns()
        assert f"{run.prefix}node-b-qdhcp-{network['id']}" in list_netns()
        assert taps["node-b"] in _bridge_members(fabric, bridge)
        assert taps["node-a"] not in _bridge_members(fabric, bridge)
        # and node-b's next pass finds everything right: nothing to change
        again = _netagent(configs["node-b"], "--once", "--log-level", "DEBUG")
        assert again.wait(60) == 0
        last = configs["node-b"].with_suffix(".log").read_text().splitlines()
        assert any("full pass" in line and ": 0 steps" in line for line in last[-5:]), last[-5:]
    finally:
        for config in configs.values():
            _netagent(config, "--cleanup").wait(60)
        subprocess.run(["ip", "netns", "delete", fabric], capture_output=True)
