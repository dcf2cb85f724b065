"""Reading the topology: what is scheduled to this host (or its static lists), in calls
whose request lines stay short whatever the number of networks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from metastack.netagent.config import NetagentConfig
from metastack.netagent.topology import IDS_PER_CALL, UnknownAgent, fetch_topology


class RecordingClient:
    """Serves `count` networks with one subnet each, `scheduled` of them (default all) and
    every router scheduled to the agent of host "node"; records every list call's filters."""

    def __init__(self, count: int, scheduled: int | None = None, routers: int = 0) -> None:
        self.networks = [
            {"id": f"{n:08d}-0000-4000-8000-000000000000", "mtu": 1450} for n in range(count)
        ]
        self.routers = [
            {"id": f"{n:08d}-0000-4000-8000-00000000000f", "interfaces": []} for n in range(routers)
        ]
        self.agent = {
            "host": "node",
            "networks": [n["id"] for n in self.networks[:scheduled]],
            "routers": [r["id"] for r in self.routers],
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def list(self, plural: str, **filters: str | Sequence[str] | None) -> list[Any]:
        self.calls.append((plural, filters))
        if plural == "agents":
            return [self.agent] if filters.get("host") == self.agent["host"] else []
        if plural == "routers":
            ids = filters.get("id")
            return [r for r in self.routers if ids is None or r["id"] in ids]
        if plural == "networks":
            ids = filters.get("id")
            return [n for n in self.networks if ids is None or n["id"] in ids]
        if plural == "subnets":
            return [
                {"id": f"s-{net_id}", "network_id": net_id, "cidr": "10.0.0.0/24",
                 "ip_version": 4, "gateway_ip": "10.0.0.1", "enable_dhcp": True}
                for net_id in filters["network_id"] or ()
            ]  # fmt: skip
        return []


async def test_many_networks_are_read_in_bounded_calls() -> None:
    client = RecordingClient(250)
    config = NetagentConfig(control_url="http://control", host="node")
    topology = await fetch_topology(client, config)  # type: ignore[arg-type]
    assert len(topology.networks) == 250
    assert all(len(t.subnets) == 1 for t in topology.networks.values())
    for plural, filters in client.calls:
        for value in filters.values():
            if isinstance(value, list):
                assert len(value) <= IDS_PER_CALL, plural
    subnet_calls = [f for p, f in client.calls if p == "subnets"]
    assert len(subnet_calls) == 3


async def test_serves_only_what_is_scheduled_to_this_host() -> None:
    client = RecordingClient(10, scheduled=3, routers=2)
    config = NetagentConfig(control_url="http://control", host="node")
    topology = await fetch_topology(client, config)  # type: ignore[arg-type]
    assert set(topology.dhcp_networks) == set(client.agent["networks"])
    assert set(topology.routers) == set(client.agent["routers"])
    assert ("agents", {"host": "node"}) in client.calls
    other = NetagentConfig(control_url="http://control", host="another-node")
    with pytest.raises(UnknownAgent):  # not "serve nothing": the pass fails, nothing is torn down
        await fetch_topology(client, other)  # type: ignore[arg-type]


async def test_static_lists_win_over_scheduling() -> None:
    client = RecordingClient(10, scheduled=3, routers=2)
    static = client.networks[5]["id"]
    config = NetagentConfig(control_url="http://control", host="node", networks=[static])
    topology = await fetch_topology(client, config)  # type: ignore[arg-type]
    assert topology.dhcp_networks == {static}
    assert set(topology.routers) == set(client.agent["routers"])  # not static: scheduled
    assert config.reported_capabilities == ["l3", "metadata"]  # no DHCP scheduled to it
    both = NetagentConfig(
        control_url="http://control", host="node", networks=[static], routers=["r"]
    )
    client.calls.clear()
    await fetch_topology(client, both)  # type: ignore[arg-type]
    assert "agents" not in {plural for plural, _ in client.calls}
