"""`bench neutron-agent`'s pure parts: the ports neutron's agent is given, the table."""

from __future__ import annotations

from typing import Any

from metastack.bench.neutron import side_by_side
from metastack.lab.upstream import neutron_ports


def _report(errors: dict[str, int], p99: float) -> dict[str, Any]:
    return {
        "instances": 100, "requests": 5400, "errors": sum(errors.values()),
        "crawls_complete": 100 - len(errors), "wall_s": 9.5, "req_s": 568.4,
        "p50_ms": 70.0, "p90_ms": 90.0, "p99_ms": p99, "max_ms": 130.0,
        "errors_by_kind": errors,
        "per_step": {"openstack-wait": {"errors": sum(errors.values())}, "ec2-tree": {"errors": 0}},
    }  # fmt: skip


def test_side_by_side_has_a_column_per_proxy_and_names_the_errors() -> None:
    table = side_by_side(
        {"our proxy": _report({}, 110.0), "haproxy": _report({"http 503": 3}, 120.5)}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["our", "proxy", "haproxy"]
    assert lines[3].split() == ["errors", "0", "3"]
    assert "p99 (ms)" in table and "110.0" in table and "120.5" in table
    assert "errors behind haproxy: http 503 x3" in table
    assert "{'openstack-wait': 3}" in table
    assert "errors behind our proxy" not in table


def test_neutron_ports_are_what_the_agent_filters_on() -> None:
    port = {
        "id": "p1", "network_id": "n1", "project_id": "pr", "mac_address": "fa:16:3e:00:00:01",
        "device_id": "vm-1", "device_owner": "compute:nova", "floating_ip": None,
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}], "vif_type": "ovs",
    }  # fmt: skip
    assert neutron_ports([port]) == {
        "ports": [
            {
                "id": "p1", "device_id": "vm-1", "device_owner": "compute:nova",
                "network_id": "n1", "project_id": "pr", "tenant_id": "pr",
                "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}],
            }
        ]
    }  # fmt: skip
