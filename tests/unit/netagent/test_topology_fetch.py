"""Reading the topology: any number of networks fits in the control API's request lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metastack.netagent.config import NetagentConfig
from metastack.netagent.topology import IDS_PER_CALL, fetch_topology


class RecordingClient:
    """Serves `count` networks with one subnet each; records every list call's filters."""

    def __init__(self, count: int) -> None:
        self.networks = [
            {"id": f"{n:08d}-0000-4000-8000-000000000000", "mtu": 1450} for n in range(count)
        ]
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def list(self, plural: str, **filters: str | Sequence[str] | None) -> list[Any]:
        self.calls.append((plural, filters))
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
