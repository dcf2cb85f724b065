"""`bench freshness`: how soon a guest sees a metadata change written through another API node.

A writer changes one key of an instance's metadata (nova's merge, `POST
/v1/instances/{id}/metadata`) through the first API node's control API, reached from the
fabric namespace on the management network. The instance's guest reads
`/openstack/latest/meta_data.json` through its router on a network node whose agent knows
only the last API node (its `metadata_endpoints` and `control_url`): so the write and the
read meet only in the database. The guest reads 5 ms after each acknowledgement, then every
5 ms until it sees the new value, then a few times more; then the next write.

Per write: acknowledgement to the end of the first fresh read (`p50_ms`, `p99_ms`,
`max_ms`), whether the first read was stale (`stale_first_reads`), stale reads after the
first fresh one (`stale_reads`), and writes never seen within `fresh_timeout`
(`never_fresh`). A read answered with an error is neither fresh nor stale
(`read_errors`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metastack.bench import fleet, nodes
from metastack.bench.report import percentile
from metastack.bench.source import source_state
from metastack.demo import cluster
from metastack.demo import guests as demo_guests
from metastack.demo.errors import DemoUsageError
from metastack.demo.nodes import CONTROL_PORT, MAX_NODES, METADATA_PORT
from metastack.demo.run import DEMO_KEY
from metastack.demo.run import wait_for_namespaces as wait_namespaces
from metastack.demo.state import DemoState, Guest
from metastack.errors import MetastackError
from metastack.netns.sockets import _setns, netns_path, return_to

Progress = Callable[[str], None]
KEY = "fresh"  # the metadata key every write changes
DOCUMENT = "/openstack/latest/meta_data.json"
METADATA_IP = "169.254.169.254"
WARM_TIMEOUT = 30.0


class FreshnessError(MetastackError):
    """The measurement could not be set up or run."""


@dataclass(frozen=True)
class Options:
    """What `metastack bench freshness` was asked to do."""

    writes: int = 200
    api_nodes: int = 2
    network_nodes: int = 2
    database: str = ""  # "" = SQLite (one API node); PostgreSQL: the run's own database
    time_limit: float = 120.0  # seconds for the writes; fewer are made past it
    workdir: Path | None = None
    first_read_ms: float = 5.0  # after the acknowledgement
    interval_ms: float = 5.0  # between the starts of two reads
    reads_after_fresh: int = 4  # to catch a stale answer after a fresh one
    fresh_timeout: float = 10.0  # a write not seen by then is `never_fresh`


def check(options: Options) -> None:
    """DemoUsageError, before anything is made, for what cannot run."""
    if max(options.api_nodes, options.network_nodes) > MAX_NODES:
        raise DemoUsageError(f"at most {MAX_NODES} nodes of each role")
    nodes.check_database(options.database, options.api_nodes, in_namespaces=True)


def socket_in(netns: str) -> socket.socket:
    """A TCP socket created inside `netns` (it stays there; this thread comes back)."""
    target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            return_to(origin, netns)
    finally:
        os.close(target)
        os.close(origin)


class NetnsConnection(http.client.HTTPConnection):
    """A keep-alive HTTP connection whose socket lives in a network namespace."""

    def __init__(self, netns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        sock = socket_in(self.netns)
        try:
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _exchange(
    conn: NetnsConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request on a keep-alive connection, sent again once on a connection the other
    side had closed meanwhile (both requests here are idempotent)."""
    for attempt in (1, 2):
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass
class Outcome:
    """One write and the reads that followed it."""

    write_ms: float
    fresh_ms: float | None = None  # acknowledgement -> end of the first fresh read
    first_read_stale: bool = False
    stale_after_fresh: int = 0
    reads: int = 0
    read_errors: Counter[str] = field(default_factory=Counter)
    read_ms: list[float] = field(default_factory=list)


class Probe:
    """The writer (in the fabric namespace, to one API node's control API) and the reader
    (in the guest, to 169.254.169.254)."""

    def __init__(self, options: Options, fabric: str, writer: str, token: str, guest: str):
        self.options = options
        self.writer = NetnsConnection(fabric, writer, CONTROL_PORT, timeout=10.0)
        self.reader = NetnsConnection(guest, METADATA_IP, 80, timeout=10.0)
        self.token = token

    def close(self) -> None:
        self.writer.close()
        self.reader.close()

    def write(self, instance: str, value: str) -> None:
        body = json.dumps({"metadata": {KEY: value}}).encode()
        headers = {"X-Auth-Token": self.token, "Content-Type": "application/json"}
        path = f"/v1/instances/{instance}/metadata"
        status, answer = _exchange(self.writer, "POST", path, body, headers)
        if status != 200:
            raise FreshnessError(f"POST {path}: {status} {answer[:300]!r}")

    def read(self) -> str:
        """The `meta` value of KEY the guest sees now; FreshnessError naming what failed."""
        try:
            status, answer = _exchange(self.reader, "GET", DOCUMENT, None, {})
        except (OSError, http.client.HTTPException) as exc:
            self.reader.close()
            raise FreshnessError(type(exc).__name__) from None
        if status != 200:
            raise FreshnessError(f"HTTP {status}")
        try:
            meta = json.loads(answer)["meta"]
        except (ValueError, KeyError, TypeError):
            raise FreshnessError("not a meta_data.json") from None
        return str(meta.get(KEY, ""))

    def measure(self, instance: str, value: str) -> Outcome:
        """Write `value`, then read until it is seen and a few times more."""
        options = self.options
        began = time.perf_counter()
        self.write(instance, value)
        ack = time.perf_counter()
        outcome = Outcome(write_ms=(ack - began) * 1000)
        next_at = ack + options.first_read_ms / 1000
        after = 0
        while True:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            start = time.perf_counter()
            try:
                seen: str | None = self.read()
            except FreshnessError as exc:
                seen = None
                outcome.read_errors[str(exc)] += 1
            end = time.perf_counter()
            outcome.reads += 1
            outcome.read_ms.append((end - start) * 1000)
            if seen is not None and seen != value:  # stale: the value before this write
                if outcome.reads == 1:
                    outcome.first_read_stale = True
                if outcome.fresh_ms is not None:
                    outcome.stale_after_fresh += 1
            if seen == value and outcome.fresh_ms is None:
                outcome.fresh_ms = (end - ack) * 1000
            elif outcome.fresh_ms is not None:
                after += 1
            if outcome.fresh_ms is not None and after >= options.reads_after_fresh:
                return outcome
            if outcome.fresh_ms is None and end - ack > options.fresh_timeout:
                return outcome
            next_at = start + options.interval_ms / 1000


def freshness(options: Options, progress: Progress) -> dict[str, Any]:
    """Set up the nodes and the guest, write and read, remove everything; the report."""
    check(options)
    state = nodes.new_state(options.workdir)
    progress(
        f"run {state.run_id}: {options.api_nodes} API nodes, {options.network_nodes} network "
        f"nodes on {nodes.database_kind(options.database)}; {options.writes} writes"
    )
    try:
        return _freshness(state, options, progress)
    finally:
        nodes.remove(state, progress)


@dataclass
class Reader:
    """Where the guest reads: its instance, namespace, network node and path."""

    instance: str
    namespace: str
    network_node: str
    api_node: str


def _setup(state: DemoState, options: Options, progress: Progress) -> Reader:
    database = nodes.run_database(options.database, state.run_id)
    lab = nodes.start_api_nodes(state, progress, options.api_nodes, options.network_nodes, database)
    reader_api, pinned = lab.api[-1], lab.network[-1]
    call = nodes.control(state)
    # A routed network per network node: the routers go round the nodes, one each.
    nets = fleet.create_networks(call, 2 * len(lab.network), progress)
    routers = [n.router_id for n in nets if n.router_id]
    only = {
        pinned.name: {
            "metadata_endpoints": [f"http://{reader_api.address}:{METADATA_PORT}"],
            "control_url": f"http://{reader_api.address}:{CONTROL_PORT}",
        }
    }
    progress(f"{pinned.name}'s agent knows {reader_api.name} only")
    wanted = cluster.start_network_nodes(
        state, lab, [n.id for n in nets], routers, progress, agent=only
    )
    wait_namespaces(state, wanted, progress)
    server = next(s for s in nodes.servers(state, wanted) if s.name == pinned.name)
    net = next((n for n in nets if n.router_id and server.serves_router(n.router_id)), None)
    if net is None or net.router_id is None:
        raise FreshnessError(f"no router is served by {pinned.name}")
    instance = call(
        "POST",
        "/v1/instances",
        {
            "name": "freshness",
            "project_id": net.project,
            "networks": [{"network_id": net.id, "ip_address": fleet.guest_ip(0)}],
            "key_name": "freshness",
            "public_key": DEMO_KEY,
            "user_data": base64.b64encode(b"#cloud-config\n").decode(),
            "metadata": {KEY: "initial"},
        },
    )["uuid"]
    port = call("GET", f"/v1/ports?device_id={instance}")["ports"][0]
    nodes.wait_for_listeners(server, {server.config.router_netns(net.router_id)}, 60)
    namespace = f"{state.prefix}reader"
    state.guests.append(
        Guest("reader", instance, namespace, net.id, "routed", net.project, port["mac_address"])
    )
    state.save()
    progress(f"plugging the guest {namespace} into {net.id[:8]} (router on {pinned.name}); DHCP")
    bridge = server.config.bridge_name(net.id)
    state.files += demo_guests.plug(namespace, server.config.fabric_netns, bridge, "reader",
                                    port["mac_address"])  # fmt: skip
    state.save()
    demo_guests.dhcp(namespace)
    if demo_guests.metadata_path(namespace, fleet.GATEWAY) != "router":
        raise FreshnessError(f"{namespace}: 169.254.169.254 is not reached through its router")
    return Reader(instance, namespace, pinned.name, reader_api.name)


def _warm(probe: Probe) -> None:
    """Read until the guest is answered (the agent's lookup and the API's cache warm)."""
    deadline = time.monotonic() + WARM_TIMEOUT
    while True:
        try:
            if probe.read() == "initial":
                return
        except FreshnessError as exc:
            if time.monotonic() > deadline:
                raise FreshnessError(f"the guest is not answered: {exc}") from None
        if time.monotonic() > deadline:
            raise FreshnessError("the guest never saw the instance's first metadata")
        time.sleep(0.1)


def _freshness(state: DemoState, options: Options, progress: Progress) -> dict[str, Any]:
    began = time.monotonic()
    reader = _setup(state, options, progress)
    writer = state.nodes[0]  # api-1
    probe = Probe(options, f"{state.prefix}fabric", writer.address, state.admin_token,
                  reader.namespace)  # fmt: skip
    outcomes: list[Outcome] = []
    write_errors: Counter[str] = Counter()
    setup_s = wall = 0.0
    try:
        _warm(probe)
        setup_s = time.monotonic() - began
        progress(
            f"set up in {setup_s:.1f} s; {options.writes} writes through {writer.name}, read "
            f"through {reader.network_node} from {reader.api_node}"
        )
        started = time.monotonic()
        for number in range(options.writes):
            if time.monotonic() - started > options.time_limit:
                progress(f"time limit ({options.time_limit:.0f} s) reached after {number} writes")
                break
            try:
                outcomes.append(probe.measure(reader.instance, f"{state.run_id}-{number}"))
            except FreshnessError as exc:  # the write was refused
                write_errors[str(exc)[:80]] += 1
            except (OSError, http.client.HTTPException) as exc:
                write_errors[type(exc).__name__] += 1
                with contextlib.suppress(OSError):
                    probe.writer.close()
        wall = time.monotonic() - started
    finally:
        probe.close()
    return _report(state, options, reader, writer.name, outcomes, write_errors, setup_s, wall)


def _ms(values: list[float], q: float) -> float:
    return round(percentile(sorted(values), q), 2)


def _report(
    state: DemoState,
    options: Options,
    reader: Reader,
    writer: str,
    outcomes: list[Outcome],
    write_errors: Counter[str],
    setup_s: float,
    wall: float,
) -> dict[str, Any]:
    fresh = [o.fresh_ms for o in outcomes if o.fresh_ms is not None]
    read_errors: Counter[str] = Counter()
    for outcome in outcomes:
        read_errors.update(outcome.read_errors)
    reads = [ms for o in outcomes for ms in o.read_ms]
    writes = [o.write_ms for o in outcomes]
    return {
        "writes": len(outcomes),
        "p50_ms": _ms(fresh, 50),
        "p99_ms": _ms(fresh, 99),
        "max_ms": round(max(fresh), 2) if fresh else 0.0,
        "stale_reads": sum(o.stale_after_fresh for o in outcomes),
        "stale_first_reads": sum(1 for o in outcomes if o.first_read_stale),
        "never_fresh": sum(1 for o in outcomes if o.fresh_ms is None),
        "p90_ms": _ms(fresh, 90),
        "min_ms": round(min(fresh), 2) if fresh else 0.0,
        "fresh_at_first_read": sum(
            1 for o in outcomes if o.fresh_ms is not None and not o.first_read_stale
        ),
        "writes_asked": options.writes,
        "write_errors": sum(write_errors.values()),
        "write_errors_by_kind": dict(write_errors),
        "write_p50_ms": _ms(writes, 50),
        "write_p99_ms": _ms(writes, 99),
        "reads": len(reads),
        "read_errors": sum(read_errors.values()),
        "read_errors_by_kind": dict(read_errors),
        "read_p50_ms": _ms(reads, 50),
        "read_p99_ms": _ms(reads, 99),
        "first_read_after_ms": options.first_read_ms,
        "read_interval_ms": options.interval_ms,
        "reads_after_fresh": options.reads_after_fresh,
        "fresh_timeout_s": options.fresh_timeout,
        "update": "POST /v1/instances/{id}/metadata (merge of one key)",
        "document": DOCUMENT,
        "writer": f"{writer} control API",
        "reader": f"a guest behind {reader.network_node}'s router, whose agent knows "
        f"{reader.api_node} only",
        "api_nodes": options.api_nodes,
        "network_nodes": options.network_nodes,
        "database": nodes.database_kind(options.database),
        "time_limit_s": options.time_limit,
        "complete": len(outcomes) + sum(write_errors.values()) >= options.writes,
        "setup_s": round(setup_s, 2),
        "wall_s": round(wall, 2),
        "run_id": state.run_id,
        "prefix": state.prefix,
        "workdir": state.workdir,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source_state(),
    }
