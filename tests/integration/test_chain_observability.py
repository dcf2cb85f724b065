"""api -> agent -> proxy as processes: the agent's and proxy's counters, the agent's access
log (JSON, every key), and readiness following what each hop needs."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metastack.lab.chain import Chain
from support.observe import get, metrics_url, scrape, value, wait_for

ACCESS_KEYS = {
    "instance_id",
    "project_id",
    "network_id",
    "router_id",
    "remote_addr",
    "method",
    "path",
    "status",
    "duration_ms",
}
GUEST, STRANGER = "127.0.0.2", "127.0.0.3"  # a guest with a port; an address without one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    observed = {"metrics_listen": "127.0.0.1:0", "log_format": "json"}
    with Chain(
        tmp_path / "chain",
        api={"metrics_listen": "127.0.0.1:0"},
        agent={**observed, "prefetch_ports": "off"},
        proxy=observed,
    ) as started:
        yield started


def ask(port: int, path: str, source: str) -> int:
    """One guest request from `source` to the proxy's listener, on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def access_lines(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "metastack.access"]


def test_counters_access_log_and_readiness(chain: Chain) -> None:
    network = chain.call("POST", "/v1/networks", {"name": "n", "project_id": "p"})
    chain.call(
        "POST",
        "/v1/subnets",
        {"network_id": network["id"], "cidr": "127.0.0.0/24", "ip_version": 4},
    )
    instance = chain.call(
        "POST",
        "/v1/instances",
        {
            "name": "vm",
            "project_id": "p",
            "networks": [{"network_id": network["id"], "ip_address": GUEST}],
        },
    )
    port = free_port()
    status, _ = chain.proxy_control().add(
        {"host": "127.0.0.1", "port": port, "network_id": network["id"]}
    )
    assert status in (200, 201)
    agent_metrics = metrics_url(chain.log_path("agent"))
    proxy_metrics = metrics_url(chain.log_path("proxy"))
    api_metrics = metrics_url(chain.log_path("api"))
    for base in (agent_metrics, proxy_metrics, api_metrics):
        wait_for(lambda base=base: get(base + "/readyz")[0] == 200, 30, f"{base} ready")

    # Warm up until the agent's cache holds the guest's lookup (its change feed is live).
    def cached() -> bool:
        before = value(scrape(agent_metrics), "metastack_agent_lookup_cache_hits_total")
        assert ask(port, "/latest/meta-data/instance-id", GUEST) == 200
        return value(scrape(agent_metrics), "metastack_agent_lookup_cache_hits_total") > before

    wait_for(cached, 30, "the agent's lookup cache answers")
    agent_before, proxy_before = scrape(agent_metrics), scrape(proxy_metrics)
    api_before = scrape(api_metrics)
    lines_before = len(access_lines(chain.log_path("agent")))

    found = [ask(port, "/openstack/latest/meta_data.json", GUEST) for _ in range(10)]
    missing = [ask(port, "/latest/meta-data/", STRANGER) for _ in range(2)]
    assert (found, missing) == ([200] * 10, [404] * 2)

    agent_after, proxy_after = scrape(agent_metrics), scrape(proxy_metrics)
    api_after = scrape(api_metrics)

    def moved(after: Any, before: Any, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(agent_after, agent_before, "metastack_agent_requests_total", status="200") == 10
    assert moved(agent_after, agent_before, "metastack_agent_requests_total", status="404") == 2
    # 10 cached lookups of the guest; the stranger: one miss, then its absence is cached.
    assert moved(agent_after, agent_before, "metastack_agent_lookup_cache_hits_total") == 11
    assert moved(agent_after, agent_before, "metastack_agent_lookup_cache_misses_total") == 1
    assert moved(proxy_after, proxy_before, "metastack_proxy_requests_total", status="200") == 10
    assert moved(proxy_after, proxy_before, "metastack_proxy_requests_total", status="404") == 2
    assert value(proxy_after, "metastack_proxy_queued_requests") == 0
    # The stranger never reaches the API: the agent answers its 404.
    openstack = {"tree": "openstack", "status": "200"}
    assert moved(api_after, api_before, "metastack_metadata_requests_total", **openstack) == 10
    assert moved(api_after, api_before, "metastack_metadata_request_seconds_count") == 10

    lines = access_lines(chain.log_path("agent"))[lines_before:]
    assert len(lines) == 12, lines
    for line in lines:
        assert set(line) >= ACCESS_KEYS, line
        assert line["method"] == "GET"
        assert line["network_id"] == network["id"] and line["router_id"] is None
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    served, refused = lines[:10], lines[10:]
    for line in served:
        assert line["status"] == 200 and line["remote_addr"] == GUEST
        assert line["path"] == "/openstack/latest/meta_data.json"
        assert (line["instance_id"], line["project_id"]) == (instance["uuid"], "p")
    for line in refused:
        assert line["status"] == 404 and line["remote_addr"] == STRANGER
        assert line["instance_id"] is None and line["path"] == "/latest/meta-data/"

    # Readiness follows what each hop needs: without the API, the agent is not ready
    # (the proxy still is: the agent's socket accepts); without the agent, the proxy isn't.
    chain.stop_api()
    wait_for(lambda: get(agent_metrics + "/readyz")[0] == 503, 15, "agent not ready")
    assert get(agent_metrics + "/healthz")[0] == 200
    assert get(proxy_metrics + "/readyz")[0] == 200
    chain.stop_service("agent")
    wait_for(lambda: get(proxy_metrics + "/readyz")[0] == 503, 15, "proxy not ready")
    assert get(proxy_metrics + "/healthz")[0] == 200
