"""A real netagent beside another agent: it serves only what is scheduled to it, takes over
what the other agent leaves, and tears down what is scheduled away from it."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Run, list_netns, wait_until

pytestmark = pytest.mark.netns


def _agents(run: Run) -> dict[str, dict[str, Any]]:
    return {agent["host"]: agent for agent in run.api.ok("GET", "/v1/agents")["agents"]}


def _network(run: Run, name: str, cidr: str) -> str:
    network = run.api.ok("POST", "/v1/networks", {"project_id": "p", "name": name})
    run.api.ok("POST", "/v1/subnets", {"network_id": network["id"], "cidr": cidr})
    return str(network["id"])


def _dhcp_ports(run: Run, network_id: str) -> set[str]:
    ports = run.api.ok("GET", f"/v1/ports?network_id={network_id}&device_owner=network:dhcp")
    return {port["device_id"] for port in ports["ports"]}


def test_serves_only_its_bindings_and_follows_them(run: Run) -> None:
    api, node = run.api, f"{run.prefix}node"
    run.start("netagent", run.netagent_argv("--report-interval", "1", "--log-level", "DEBUG"))
    wait_until(lambda: node in _agents(run), 20, "the netagent's state report")
    assert _agents(run)[node]["capabilities"] == ["dhcp", "l3", "metadata"]
    other = api.ok("POST", "/v1/agents", {"host": "other", "capabilities": ["dhcp", "l3"]})
    networks = [_network(run, f"n{i}", f"10.94.{i}.0/24") for i in range(4)]
    routers = [api.ok("POST", "/v1/routers", {"project_id": "p"})["id"] for _ in range(2)]
    mine, theirs = _agents(run)[node], _agents(run)["other"]
    # least loaded first: two networks and one router each
    assert len(mine["networks"]) == len(theirs["networks"]) == 2
    assert len(mine["routers"]) == len(theirs["routers"]) == 1
    assert set(mine["networks"]) | set(theirs["networks"]) == set(networks)

    def namespaces() -> set[str]:
        return {name for name in list_netns() if name.startswith(run.prefix + "q")}

    def wanted(agent: dict[str, Any]) -> set[str]:
        return {f"{run.prefix}qdhcp-{n}" for n in agent["networks"]} | {
            f"{run.prefix}qrouter-{r}" for r in agent["routers"]
        }

    wait_until(lambda: namespaces() == wanted(mine), 20, "namespaces of its bindings only")
    for network_id in mine["networks"]:
        wait_until(lambda n=network_id: _dhcp_ports(run, n) == {f"dhcp-{node}"}, 10, "DHCP port")
    for network_id in theirs["networks"]:
        assert _dhcp_ports(run, network_id) == set()  # the other agent (a record only) has none

    # the other agent is removed: what it served comes here, through the change feed
    api.ok("DELETE", f"/v1/agents/{other['id']}")
    assert set(_agents(run)[node]["networks"]) == set(networks)
    everything = {f"{run.prefix}qdhcp-{n}" for n in networks} | {
        f"{run.prefix}qrouter-{r}" for r in routers
    }
    wait_until(lambda: namespaces() == everything, 20, "the other agent's share taken over")

    # a second agent registers and the node's own record is removed: all of it goes to the
    # second agent, and when the node registers again (its next report) nothing is left
    # for it, so it removes every namespace and its DHCP ports are gone
    api.ok("POST", "/v1/agents", {"host": "second"})
    api.ok("DELETE", f"/v1/agents/{_agents(run)[node]['id']}")
    assert set(_agents(run)["second"]["networks"]) == set(networks)
    wait_until(lambda: node in _agents(run), 10, "the node registered again")
    assert _agents(run)[node]["networks"] == [] and _agents(run)[node]["routers"] == []
    wait_until(lambda: namespaces() == set(), 20, "everything scheduled away removed")
    for network_id in networks:
        assert f"dhcp-{node}" not in _dhcp_ports(run, network_id)
    run.stop("netagent")
