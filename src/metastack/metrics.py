"""Prometheus metrics of every service: their names (fixed: dashboards depend on them), the
registries, and the API workers' shared files.

Labels are bounded (a status code, a metadata tree), never an instance, address or
network. A request pays one increment of a cached child: the label lookup happens once
per label value, not per request.

The API's workers count in files of one private directory (prometheus-client's
multiprocess mode), each worker in files named by its index rather than its PID: a
restarted worker goes on counting where its predecessor stopped, so totals never go
back and no file is left per dead process. Any worker's `/metrics` adds them all up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
# Seconds: a cached document is answered in well under a millisecond; a vendor data target
# or a cold database may take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_EC2_FIRST = re.compile(rb"^(latest|1\.0|\d{4}-\d{2}-\d{2})$")


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A registry of one service's metrics, with the process's CPU and memory if asked."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)


def use_worker_files(directory: str, index: int) -> None:
    """In a forked API worker, before any metric exists: count in `directory`'s files of
    worker `index`."""
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue(lambda: index)  # type: ignore[no-untyped-call]


def shared_registry(directory: str) -> CollectorRegistry:
    """A registry that adds up every worker's files in `directory`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def forget_worker(directory: str, index: int) -> None:
    """A worker is gone: drop its live gauges (its counters stay: totals never go back)."""
    mark_process_dead(index, directory)  # type: ignore[no-untyped-call]


class StatusCounter:
    """A counter labelled by status (and more), its children cached per label values."""

    __slots__ = ("_children", "counter")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[Any, Any] = {}

    def inc(self, *labels: str | int) -> None:
        """Count one; `labels` in the counter's label order."""
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.counter.labels(*[str(x) for x in labels])
        child.inc()


def metadata_tree(target: bytes) -> str:
    """`ec2`, `openstack` or `other`: which tree a metadata request target is in."""
    if not target.startswith(b"/"):  # absolute form: http://host/path
        start = target.find(b"/", target.find(b"//") + 2)
        target = target[start:] if start > 0 else b"/"
    first = target[1:].partition(b"?")[0].partition(b"/")[0]
    if first == b"openstack":
        return "openstack"
    if _EC2_FIRST.match(first):
        return "ec2"
    return "other"


class MetadataMetrics:
    """The metadata API: requests by tree and status, and their latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.requests = StatusCounter(
            Counter(
                "metastack_metadata_requests_total",
                "Metadata API requests answered, by tree (ec2, openstack, other) and status",
                ["tree", "status"],
                registry=registry,
            )
        )
        self.seconds = Histogram(
            "metastack_metadata_request_seconds",
            "Metadata API request handling time",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, target: bytes, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.inc(metadata_tree(target), status)
        self.seconds.observe(seconds)


class _CacheCollector(Collector):
    """The agent's lookup cache counts hits and misses itself; read them at scrape time."""

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self.stats = stats

    def collect(self) -> Any:
        stats = self.stats()
        yield CounterMetricFamily(
            "metastack_agent_lookup_cache_hits",
            "Instance lookups answered from the agent's cache",
            value=stats.get("hits", 0),
        )
        yield CounterMetricFamily(
            "metastack_agent_lookup_cache_misses",
            "Instance lookups the agent had to ask the control API for",
            value=stats.get("misses", 0),
        )


class AgentMetrics:
    """The metadata agent: guest requests by status; lookup cache hits and misses."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.requests = StatusCounter(
            Counter(
                "metastack_agent_requests_total",
                "Guest requests the agent answered, by status",
                ["status"],
                registry=registry,
            )
        )

    def watch_cache(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Export the cache's own hit and miss counts."""
        if self.registry is not None:
            self.registry.register(_CacheCollector(stats))


class ProxyMetrics:
    """The namespace proxy: guest requests by status; requests waiting for the agent."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.requests = StatusCounter(
            Counter(
                "metastack_proxy_requests_total",
                "Guest requests the proxy answered, by status",
                ["status"],
                registry=registry,
            )
        )
        self.queued = Gauge(
            "metastack_proxy_queued_requests",
            "Guest requests waiting for a turn to the agent (upstream_concurrency)",
            registry=registry,
        )

    def watch_queue(self, waiting: Callable[[], int]) -> None:
        """Read the queue length at scrape time."""
        self.queued.set_function(lambda: float(waiting()))


class NetagentMetrics:
    """The network agent: how long its reconcile passes take, and how many failed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.reconcile_seconds = Histogram(
            "metastack_netagent_reconcile_seconds",
            "Duration of reconcile passes (control API read, kernel diff and apply)",
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.reconcile_failures = Counter(
            "metastack_netagent_reconcile_failures_total",
            "Reconcile passes that failed (control API down, or steps in error)",
            registry=registry,
        )
