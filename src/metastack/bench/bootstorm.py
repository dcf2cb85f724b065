"""`bench bootstorm`: N guests crawl metadata at once through the whole chain; then clean up.

One node (the default) runs the chain in the host's namespace, as the single-node demo
does; with `--api-nodes`/`--network-nodes` above 1 it is the demo's cluster of nodes
(`bench/nodes.py`), the guests spread over networks served by different network nodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metastack.bench import fleet, haproxy, neutron, nodes, plumbing
from metastack.bench.crawl import Storm, run_storm
from metastack.bench.report import plot, summarise
from metastack.bench.sampler import Sampler, tcp_counters
from metastack.demo import cluster
from metastack.demo import guests as demo_guests
from metastack.demo.database import ensure_database
from metastack.demo.errors import DemoUsageError
from metastack.demo.nodes import MAX_NODES
from metastack.demo.run import netagent_config, start_chain, start_netagent
from metastack.demo.run import wait_for_namespaces as wait_namespaces
from metastack.demo.state import DemoState, Guest, Process
from metastack.lab.chain import Chain
from metastack.lab.guest import GUEST_PYTHON, script
from metastack.lab.upstream import HaproxySite
from metastack.netagent.config import NetagentConfig, load_netagent_config
from metastack.netagent.proxyproc import ProxyProcess
from metastack.netns import dnsmasq
from metastack.netns.exec import NetnsError, run

Progress = Callable[[str], None]
ProxyKind = Literal["metastack", "haproxy"]
AgentKind = Literal["metastack", "neutron"]
METADATA_URL = "http://169.254.169.254"


class BootstormError(NetnsError):
    """The storm could not be set up as asked."""


@dataclass(frozen=True)
class Options:
    """What `metastack bench bootstorm` was asked to do."""

    instances: int
    networks: int | None = None
    proxy: ProxyKind = "metastack"
    dhcp_per_network: int = 1
    probes: int = 4
    timeout: float = 10.0
    deadline: float = 300.0
    workdir: Path | None = None
    # "neutron": neutron's own agent in ours' place (bench/neutron.py); needs upstream_python.
    agent: AgentKind = "metastack"
    upstream_python: Path | None = None
    agent_workers: int | None = None  # neutron's agent; None: its default
    api_nodes: int = 1
    network_nodes: int = 1
    database: str = ""  # "" = SQLite; PostgreSQL: the run's own database on that server

    @property
    def multi_node(self) -> bool:
        """Whether every node is a namespace of its own (the demo's cluster)."""
        return self.api_nodes > 1 or self.network_nodes > 1


def check(options: Options) -> None:
    """DemoUsageError, before anything is made, for what cannot run."""
    if options.multi_node and (options.proxy != "metastack" or options.agent != "metastack"):
        raise DemoUsageError("several nodes run our proxy and agent only (no --proxy haproxy)")
    if max(options.api_nodes, options.network_nodes) > MAX_NODES:
        raise DemoUsageError(f"at most {MAX_NODES} nodes of each role")
    nodes.check_database(options.database, options.api_nodes, in_namespaces=options.multi_node)


def bootstorm(options: Options, progress: Progress) -> dict[str, Any]:
    """Set up, storm, check against real cloud-init, and remove everything; the report."""
    check(options)
    networks = options.networks or fleet.default_networks(options.instances, options.network_nodes)
    if -(-options.instances // networks) > fleet.PER_BRIDGE:
        raise BootstormError(f"more than {fleet.PER_BRIDGE} guests on a bridge: add --networks")
    state = nodes.new_state(options.workdir)
    where = (
        f"{options.api_nodes} API nodes, {options.network_nodes} network nodes"
        if options.multi_node
        else "one node"
    )
    progress(
        f"run {state.run_id}: {options.instances} guests, {networks} networks, "
        f"{options.proxy}, {where} on {nodes.database_kind(options.database)}"
    )
    try:
        return _bootstorm(state, options, networks, progress)
    finally:
        nodes.remove(state, progress)


@dataclass
class Setup:
    """The running services and the storm's networks, whichever kind of run."""

    call: nodes.Call
    nets: list[fleet.Net]
    servers: list[nodes.Server]
    wanted: set[str]  # every qdhcp-/qrouter- namespace that serves the storm
    chain: Chain | None = None  # one node: the chain in the host's namespace
    upstream: neutron.NeutronAgent | None = None

    @property
    def template(self) -> NetagentConfig:
        """A netagent config (bridge names and the fabric are the same on every node)."""
        return self.servers[0].config


def _single(state: DemoState, options: Options, count: int, progress: Progress) -> Setup:
    """api, agent and netagent (with the proxy) in the host's namespace, as the demo's."""
    api: dict[str, Any] = {}
    if options.database:
        database = nodes.run_database(options.database, state.run_id)
        state.database_url = database
        state.save()
        state.created_database = ensure_database(database)
        state.save()
        api["database_url"] = database
    # haproxy drops to nobody: named to the agent, its socket's `deduce` mode lets it in.
    proxies = haproxy.identity() if options.proxy == "haproxy" else {}
    chain = start_chain(state, 0, 0, progress, agent=proxies, api=api)
    upstream = None
    if options.agent == "neutron":
        if options.upstream_python is None:
            raise BootstormError("neutron's agent needs the upstream environment's Python")
        upstream = neutron.replace_agent(
            state, chain, options.upstream_python, options.agent_workers, progress
        )
    start_netagent(state, chain, progress, run_proxy=options.proxy == "metastack")
    config = load_netagent_config(netagent_config(state))
    nets = fleet.create_networks(chain.call, count, progress)
    wanted = {config.dhcp_netns(n.id) for n in nets}
    wanted |= {config.router_netns(n.router_id) for n in nets if n.router_id}
    wait_namespaces(state, wanted, progress, timeout=60 + count)
    server = nodes.Server("net-1", config, frozenset(wanted))
    return Setup(chain.call, nets, [server], wanted, chain, upstream)


def _cluster(state: DemoState, options: Options, count: int, progress: Progress) -> Setup:
    """The demo's nodes: API nodes on one database, network nodes sharing the tenant
    bridges; the storm's networks scheduled over the network nodes before they start."""
    database = nodes.run_database(options.database, state.run_id)
    lab = nodes.start_api_nodes(state, progress, options.api_nodes, options.network_nodes, database)
    call = nodes.control(state)
    nets = fleet.create_networks(call, count, progress)
    routers = [n.router_id for n in nets if n.router_id]
    wanted = cluster.start_network_nodes(state, lab, [n.id for n in nets], routers, progress)
    wait_namespaces(state, wanted, progress, timeout=60 + count)
    return Setup(call, nets, nodes.servers(state, wanted), wanted)


def _bootstorm(
    state: DemoState, options: Options, count: int, progress: Progress
) -> dict[str, Any]:
    began = time.monotonic()
    setup = (_cluster if options.multi_node else _single)(state, options, count, progress)
    nets, config = setup.nets, setup.template
    creating = time.monotonic()
    members = fleet.create_instances(setup.call, nets, options.instances, progress)
    created = time.monotonic() - creating
    _check_dhcp_ports(setup)
    if setup.upstream is not None and setup.chain is not None:
        progress(f"neutron's agent: {setup.upstream.write_ports(setup.chain)} ports")
    plugs = fleet.plugs(members, state.prefix, config.bridge_name)
    by_netns = {p.netns: m for p, m in zip(plugs, members, strict=True)}
    for plug, member in zip(plugs, members, strict=True):
        state.guests.append(
            Guest(f"storm-{member.index}", member.uuid, plug.netns, member.net.id,
                  "routed" if member.net.routed else "isolated", member.net.project, member.mac)
        )  # fmt: skip
    state.save()
    haproxies = _start_proxies(state, setup, options.proxy, progress)
    progress(f"plugging {len(plugs)} guests into {count} bridges")
    plumbing.create(plugs, config.fabric_netns)
    dhcp_count = _address(plugs, nets, by_netns, options.dhcp_per_network, progress)
    _pin_server_side(setup, members)
    probed = _probe_guests(plugs, options.probes, count)
    for plug in probed:
        resolv = demo_guests.ETC_NETNS / plug.netns / "resolv.conf"
        resolv.parent.mkdir(parents=True, exist_ok=True)
        state.files.append(str(resolv.parent))
        resolv.write_text("nameserver 127.0.0.1\n")  # cloud-init's lookups fail at once
    state.save()
    setup_s = time.monotonic() - began
    progress(f"set up in {setup_s:.1f} s; the storm starts: {len(plugs)} guests at once")
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    if setup.chain is not None:
        targets = _targets(state, setup.chain, haproxies)
        if setup.upstream is not None:
            targets["agent"] = [setup.upstream.pid]
    else:
        targets = nodes.targets(state)
    sampler = Sampler(lambda: targets)
    serving = sorted(setup.wanted)
    tcp_before = tcp_counters(serving)
    sampler.start()
    storm = run_storm([p.netns for p in plugs], options.timeout, options.deadline)
    usage = sampler.stop()
    tcp_after = tcp_counters(serving)
    guests_tcp = tcp_counters(p.netns for p in plugs)  # new namespaces: counted from 0
    progress(f"storm over in {storm.ended - storm.started:.2f} s; real cloud-init in {len(probed)}")
    checks = [_check_sequence(plug.netns, storm, plugs.index(plug)) for plug in probed]
    summary = summarise(storm)
    return {
        "instances": options.instances,
        "networks": count,
        "routed_networks": sum(1 for n in nets if n.routed),
        "proxy": options.proxy,
        "agent": options.agent,
        "agent_workers": options.agent_workers,
        "api_nodes": options.api_nodes,
        "network_nodes": options.network_nodes,
        "database": nodes.database_kind(options.database),
        "guests_per_network_node": _spread(setup, members),
        "run_id": state.run_id,
        "prefix": state.prefix,
        "workdir": state.workdir,
        "setup_s": round(setup_s, 2),
        "create_instances_s": round(created, 2),
        "addressing": {
            "dhcp": dhcp_count,
            "static": len(plugs) - dhcp_count,
            "how": "busybox udhcpc in a sample of each network's guests; the rest get the "
            "same prefix, MTU and option-121 routes by `ip`, next hops as permanent neighbours",
        },
        "request_timeout_s": options.timeout,
        **summary,
        "sequence_ok": bool(checks) and all(c["ok"] for c in checks),
        "sequence_checks": checks,
        "rss_mb": usage.peak_rss_mb,
        "cpu_s": usage.cpu_s,
        # Others may share the machine: what it did besides this run, during the storm.
        "machine_cpu_s": usage.machine_cpu_s,
        "irq_cpu_s": usage.irq_cpu_s,
        "steal_cpu_s": usage.steal_cpu_s,
        "backlog_drops": usage.backlog_drops,
        "tcp": {
            "server_side": {k: tcp_after[k] - tcp_before[k] for k in tcp_after},
            "guests": guests_tcp,
        },
        # Interrupt time spent in a process's context also counts in its CPU time.
        "other_cpu_s": round(usage.machine_cpu_s - sum(usage.cpu_s.values()), 2),
        "load_average_before": load_before,
        "process_counts": usage.count,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(storm.wall_clock_start)),
        "_storm": storm,
    }


def _check_dhcp_ports(setup: Setup) -> None:
    """Every network has the DHCP port of each node that serves it (and so a metadata
    next hop for its isolated guests)."""
    for net in setup.nets:
        owners = {p.device_id for p in net.dhcp_ports}
        expected = {s.config.dhcp_device_id for s in setup.servers if s.serves_network(net.id)}
        if not expected or not expected <= owners:
            raise BootstormError(
                f"network {net.id}: DHCP ports of {sorted(owners)}, expected {sorted(expected)}"
            )


def _server_of_port(setup: Setup, device_id: str) -> nodes.Server:
    return next(s for s in setup.servers if s.config.dhcp_device_id == device_id)


def _spread(setup: Setup, members: list[fleet.Member]) -> dict[str, int]:
    """How many guests each network node answers (its router's, or the DHCP port their
    metadata route points at)."""
    counts = dict.fromkeys((s.name for s in setup.servers), 0)
    for member in members:
        net = member.net
        if net.router_id is not None:
            router = net.router_id
            for server in setup.servers:
                if server.serves_router(router):
                    counts[server.name] += 1
                    break
        else:
            port = net.dhcp_ports[member.slot % len(net.dhcp_ports)]
            counts[_server_of_port(setup, port.device_id).name] += 1
    return counts


def _listener_sites(setup: Setup, server: nodes.Server) -> list[haproxy.Site]:
    """The namespaces where a node's proxy listens for the storm: its routers' (port
    9697 behind the NAT redirect) and its isolated networks' DHCP namespaces."""
    sites = []
    config = server.config
    for net in setup.nets:
        if net.router_id and server.serves_router(net.router_id):
            netns = config.router_netns(net.router_id)
            sites.append(haproxy.Site(netns, "0.0.0.0:9697", "Router", net.router_id))
        elif not net.router_id and server.serves_network(net.id):
            sites.append(
                haproxy.Site(config.dhcp_netns(net.id), "169.254.169.254:80", "Network", net.id)
            )
    return sites


def _start_proxies(
    state: DemoState, setup: Setup, kind: ProxyKind, progress: Progress
) -> list[int]:
    """Wait for our proxies' listeners, or start one haproxy per serving namespace (in front
    of neutron's agent: configured by neutron's own code)."""
    if kind == "metastack":
        for server in setup.servers:
            sites = _listener_sites(setup, server)
            progress(f"waiting for the proxy of {server.name} to hold {len(sites)} listeners")
            nodes.wait_for_listeners(server, {s.netns for s in sites}, 60 + len(sites))
        return []
    chain = setup.chain
    if chain is None:
        raise BootstormError("haproxy runs in front of a single node's agent only")
    sites = _listener_sites(setup, setup.servers[0])
    progress(f"starting {len(sites)} haproxy processes (neutron's configuration)")
    if setup.upstream is not None:
        neutron_sites = []
        for site in sites:
            host, _, port = site.bind.rpartition(":")
            neutron_sites.append(
                HaproxySite(site.netns, site.kind.lower(), site.uuid, host, int(port))
            )
        return neutron.start_haproxies(state, setup.upstream, chain, neutron_sites)
    started: dict[str, tuple[int, str]] = {}
    try:
        haproxy.start(sites, str(chain.agent_socket), Path(state.workdir) / "haproxy", started)
    finally:
        state.processes += [Process("haproxy", pid, conf) for pid, conf in started.values()]
        state.save()
    return [pid for pid, _ in started.values()]


def _address(
    plugs: list[plumbing.Plug],
    nets: list[fleet.Net],
    by_netns: dict[str, fleet.Member],
    per_network: int,
    progress: Progress,
) -> int:
    """DHCP for the first guests of each network, the same configuration by `ip` for the rest;
    returns how many guests DHCP configured."""
    sample = [p for p in plugs if by_netns[p.netns].index // len(nets) < per_network]
    progress(f"DHCP (busybox udhcpc) in {len(sample)} guests")
    failed = plumbing.dhcp(sample)
    if failed:
        raise BootstormError(f"DHCP failed in {len(failed)} guests: {next(iter(failed.values()))}")
    seen = {p.netns: plumbing.observe(p.netns) for p in sample}
    problems = fleet.check_dhcp(seen, by_netns)
    if problems:
        raise BootstormError("DHCP differs from the plan: " + "; ".join(problems[:3]))
    given: dict[str, plumbing.Addressing] = {}
    for plug in sample:
        given.setdefault(plug.bridge, seen[plug.netns][1])
    rest = [p for p in plugs if p not in set(sample)]
    addressing = {}
    for plug in rest:  # networks without a DHCP sample: the prefix and MTU the plan expects
        member = by_netns[plug.netns]
        found = given.get(plug.bridge, plumbing.Addressing(20, 1450, ()))
        routes = member.net.routes(member.slot)
        addressing[plug.netns] = plumbing.Addressing(found.prefixlen, found.mtu, routes)
    macs = {p.bridge: by_netns[p.netns].net.macs() for p in plugs}
    progress(f"configuring {len(rest)} guests as DHCP configured the sample")
    plumbing.configure(rest, addressing, macs)
    return len(sample)


def _pin_server_side(setup: Setup, members: list[fleet.Member]) -> None:
    """Permanent neighbour entries for every guest on each port that answers it: its
    router's, or every DHCP port of its network."""
    for net in setup.nets:
        entries = [(m.ip, m.mac) for m in members if m.net is net]
        if net.router_id:
            device = f"qr-{net.router_port[:11]}"
            for server in setup.servers:
                if server.serves_router(net.router_id):
                    netns = server.config.router_netns(net.router_id)
                    plumbing.pin_neighbours(netns, device, entries)
            continue
        for port in net.dhcp_ports:
            server = _server_of_port(setup, port.device_id)
            netns = server.config.dhcp_netns(net.id)
            plumbing.pin_neighbours(netns, f"ns-{port.id[:11]}", entries)


def _probe_guests(plugs: list[plumbing.Plug], count: int, networks: int) -> list[plumbing.Plug]:
    """Guests for the real cloud-init check: both paths, DHCP- and statically configured."""
    if count <= 0:
        return []
    picks = [0, 1, len(plugs) - 1, len(plugs) - 2, networks, networks + 1, len(plugs) // 2]
    chosen: list[plumbing.Plug] = []
    for index in picks + list(range(len(plugs))):
        if 0 <= index < len(plugs) and plugs[index] not in chosen:
            chosen.append(plugs[index])
        if len(chosen) == count:
            break
    return chosen


def _check_sequence(netns: str, storm: Storm, index: int) -> dict[str, Any]:
    """Run Debian's cloud-init (OpenStack, then EC2) in a guest; compare its URLs with ours."""
    argv = ["ip", "netns", "exec", netns, GUEST_PYTHON, str(script("cloudinit_probe")), "--urls"]
    done = run(argv, check=False, timeout=120)
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    urls = [url.removeprefix(METADATA_URL) for r in reports for url in r.get("urls", [])]
    ours = storm.guests[index].paths
    same = urls == ours
    first = next((i for i, (a, b) in enumerate(zip(urls, ours, strict=False)) if a != b), None)
    return {
        "guest": netns,
        "ok": same and len(reports) == 2 and all(r.get("ok") for r in reports),
        "cloud_init_ok": [bool(r.get("ok")) for r in reports],
        "cloud_init_requests": len(urls),
        "generator_requests": len(ours),
        "first_difference": None
        if first is None
        else {"cloud-init": urls[first], "ours": ours[first]},
    }


def _targets(state: DemoState, chain: Chain, haproxies: list[int]) -> dict[str, list[int]]:
    pids = chain.pids()
    found: dict[str, list[int]] = {"api": pids.get("api", []), "agent": pids.get("agent", [])}
    for number, pid in enumerate(pids.get("api-worker", []), 1):
        found[f"api-worker-{number}"] = [pid]
    config = load_netagent_config(netagent_config(state))
    if config.proxy_config:
        proxy = ProxyProcess(config.proxy_config, config.proxy_control_socket, config.state_path)
        proxy_pid = proxy.pid()
        found["proxy"] = [proxy_pid] if proxy_pid else []
    found["netagent"] = [p.pid for p in state.processes if p.role == "netagent"]
    dhcp_dir = Path(config.state_path) / "dhcp"
    files = [dnsmasq.DnsmasqFiles(d) for d in dhcp_dir.iterdir()] if dhcp_dir.is_dir() else []
    found["dnsmasq"] = [p for p in map(dnsmasq.pid_of, files) if p is not None]
    if haproxies:
        found["haproxy"] = haproxies
    found["generator"] = [os.getpid()]
    return found


def write_outputs(report: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> None:
    """Write the JSON report (without the raw storm) and the plot."""
    storm: Storm = report.pop("_storm")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is not None:
        nodes_part = (
            f" on {report['api_nodes']} API + {report['network_nodes']} network nodes "
            f"({report['database']})"
            if report["api_nodes"] > 1 or report["network_nodes"] > 1
            else ""
        )
        title = (
            f"boot storm: {report['instances']} guests, {report['networks']} networks, "
            f"{report['proxy']} proxy{nodes_part}; {report['requests']} requests, "
            f"p99 {report['p99_ms']} ms"
        )
        plot(storm, title, plot_path)
