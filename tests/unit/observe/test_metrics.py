"""Metric labels stay bounded: the tree of a path, the status; names as pinned."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metastack.metrics import (
    AgentMetrics,
    MetadataMetrics,
    NetagentMetrics,
    ProxyMetrics,
    metadata_tree,
    new_registry,
    render,
)


@pytest.mark.parametrize(
    ("target", "tree"),
    [
        (b"/latest/meta-data/", "ec2"),
        (b"/latest", "ec2"),
        (b"/2009-04-04/user-data", "ec2"),
        (b"/1.0/meta-data/instance-id", "ec2"),
        (b"/openstack", "openstack"),
        (b"/openstack/latest/meta_data.json?x=1", "openstack"),
        (b"/", "other"),
        (b"/openstackx/", "other"),
        (b"/latestx/", "other"),
        (b"/../etc/passwd", "other"),
        (b"http://169.254.169.254/openstack/latest/", "openstack"),
        (b"*", "other"),
    ],
)
def test_metadata_tree(target: bytes, tree: str) -> None:
    assert metadata_tree(target) == tree


def samples(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(render(registry).decode()):  # type: ignore[arg-type]
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_service_exposes_its_pinned_names() -> None:
    registry = new_registry(process=False)
    api = MetadataMetrics(registry)
    api.observe(b"/openstack/latest/", 200, 0.002)
    api.observe(b"/latest/meta-data/", 404, 0.001)
    api.observe(b"/latest/meta-data/", 404, 0.001)
    agent = AgentMetrics(registry)
    agent.requests.inc(200)
    agent.watch_cache(lambda: {"hits": 7, "misses": 3})
    proxy = ProxyMetrics(registry)
    proxy.requests.inc(503)
    proxy.watch_queue(lambda: 4)
    netagent = NetagentMetrics(registry)
    netagent.reconcile_seconds.observe(0.3)
    found = samples(registry)
    assert (
        found[("metastack_metadata_requests_total", (("status", "200"), ("tree", "openstack")))]
        == 1
    )
    assert found[("metastack_metadata_requests_total", (("status", "404"), ("tree", "ec2")))] == 2
    assert found[("metastack_metadata_request_seconds_count", ())] == 3
    assert found[("metastack_agent_requests_total", (("status", "200"),))] == 1
    assert found[("metastack_agent_lookup_cache_hits_total", ())] == 7
    assert found[("metastack_agent_lookup_cache_misses_total", ())] == 3
    assert found[("metastack_proxy_requests_total", (("status", "503"),))] == 1
    assert found[("metastack_proxy_queued_requests", ())] == 4
    assert found[("metastack_netagent_reconcile_seconds_count", ())] == 1
    labels = {name for (_, pairs) in found for name, _ in pairs}
    assert labels <= {"tree", "status", "le"}  # nothing per instance, address or network
