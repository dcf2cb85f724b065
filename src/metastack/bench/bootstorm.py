"""`bench bootstorm`: N guests crawl metadata at once through the whole chain; then clean up."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metastack.bench import fleet, haproxy, neutron, plumbing
from metastack.bench.crawl import Storm, run_storm
from metastack.bench.report import plot, summarise
from metastack.bench.sampler import Sampler, tcp_counters
from metastack.demo import guests as demo_guests
from metastack.demo.run import down, netagent_config, start_chain, start_netagent
from metastack.demo.run import wait_for_namespaces as wait_namespaces
from metastack.demo.state import DemoState, Guest, Process
from metastack.lab.chain import Chain
from metastack.lab.guest import GUEST_PYTHON, script
from metastack.lab.upstream import HaproxySite
from metastack.netagent.config import NetagentConfig, load_netagent_config
from metastack.netagent.proxyproc import ProxyProcess
from metastack.netns import dnsmasq
from metastack.netns.apply import delete_netns
from metastack.netns.exec import NetnsError, run
from metastack.proxy.client import ProxyClient

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


def bootstorm(options: Options, progress: Progress) -> dict[str, Any]:
    """Set up, storm, check against real cloud-init, and remove everything; the report."""
    networks = options.networks or fleet.default_networks(options.instances)
    if -(-options.instances // networks) > fleet.PER_BRIDGE:
        raise BootstormError(f"more than {fleet.PER_BRIDGE} guests on a bridge: add --networks")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ms-bench-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # dnsmasq (nobody) and haproxy (nobody) read files under it
    run_id = secrets.token_hex(3)
    state = DemoState(str(workdir), run_id, f"ms-{run_id}-")
    state.made_etc_netns = not demo_guests.ETC_NETNS.exists()
    state.save()
    progress(f"run {run_id}: {options.instances} guests, {networks} networks, {options.proxy}")
    try:
        return _bootstorm(state, options, networks, progress)
    finally:
        progress("removing everything this run created")
        _remove_guests(state)
        down(workdir, progress)


def _remove_guests(state: DemoState) -> None:
    # One batched delete instead of down()'s one `ip netns delete` per guest.
    names = [g.namespace for g in state.guests]
    try:
        delete_netns(names)
    except NetnsError:
        return  # down() tries each one again
    for name in names:
        shutil.rmtree(demo_guests.ETC_NETNS / name, ignore_errors=True)
    state.guests = []
    state.save()


def _bootstorm(
    state: DemoState, options: Options, count: int, progress: Progress
) -> dict[str, Any]:
    began = time.monotonic()
    # haproxy drops to nobody: named to the agent, its socket's `deduce` mode lets it in.
    proxies = haproxy.identity() if options.proxy == "haproxy" else {}
    chain = start_chain(state, 0, 0, progress, agent=proxies)
    upstream = None
    if options.agent == "neutron":
        if options.upstream_python is None:
            raise BootstormError("neutron's agent needs the upstream environment's Python")
        upstream = neutron.replace_agent(
            state, chain, options.upstream_python, options.agent_workers, progress
        )
    start_netagent(state, chain, progress, run_proxy=options.proxy == "metastack")
    config = load_netagent_config(netagent_config(state))
    nets = fleet.create_networks(chain, count, progress)
    wanted = {config.dhcp_netns(n.id) for n in nets}
    wanted |= {config.router_netns(n.router_id) for n in nets if n.router_id}
    wait_namespaces(state, wanted, progress, timeout=60 + count)
    creating = time.monotonic()
    members = fleet.create_instances(chain, nets, options.instances, progress)
    created = time.monotonic() - creating
    if upstream is not None:
        progress(f"neutron's agent: {upstream.write_ports(chain)} ports")
    plugs = fleet.plugs(members, state.prefix, config.bridge_name)
    by_netns = {p.netns: m for p, m in zip(plugs, members, strict=True)}
    for plug, member in zip(plugs, members, strict=True):
        state.guests.append(
            Guest(f"storm-{member.index}", member.uuid, plug.netns, member.net.id,
                  "routed" if member.net.routed else "isolated", member.net.project, member.mac)
        )  # fmt: skip
    state.save()
    haproxies = _start_proxies(state, chain, config, nets, options.proxy, progress, upstream)
    progress(f"plugging {len(plugs)} guests into {count} bridges")
    plumbing.create(plugs, config.fabric_netns)
    dhcp_count = _address(plugs, nets, by_netns, options.dhcp_per_network, progress)
    _pin_server_side(config, nets, members)
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
    targets = _targets(state, chain, config, haproxies)
    if upstream is not None:
        targets["agent"] = [upstream.pid]
    sampler = Sampler(lambda: targets)
    serving = sorted(wanted)
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


def _start_proxies(
    state: DemoState,
    chain: Chain,
    config: NetagentConfig,
    nets: list[fleet.Net],
    kind: ProxyKind,
    progress: Progress,
    upstream: neutron.NeutronAgent | None = None,
) -> list[int]:
    """Wait for our proxy's listeners, or start one haproxy per serving namespace (in front
    of neutron's agent: configured by neutron's own code)."""
    sites = [
        haproxy.Site(config.router_netns(n.router_id), "0.0.0.0:9697", "Router", n.router_id)
        if n.router_id
        else haproxy.Site(config.dhcp_netns(n.id), "169.254.169.254:80", "Network", n.id)
        for n in nets
    ]
    if kind == "metastack":
        progress(f"waiting for the proxy to hold {len(sites)} namespace listeners")
        client = ProxyClient(str(chain.proxy_socket), timeout=5.0)

        def held() -> bool:
            try:
                status, doc = client.listeners()
            except Exception:
                return False
            have = (
                {item.get("netns") for item in doc.get("listeners", [])} if status == 200 else set()
            )
            return {s.netns for s in sites} <= have

        demo_guests.wait_for(held, 60 + len(sites), "the proxy's listeners")
        return []
    progress(f"starting {len(sites)} haproxy processes (neutron's configuration)")
    if upstream is not None:
        neutron_sites = []
        for site in sites:
            host, _, port = site.bind.rpartition(":")
            neutron_sites.append(
                HaproxySite(site.netns, site.kind.lower(), site.uuid, host, int(port))
            )
        return neutron.start_haproxies(state, upstream, chain, neutron_sites)
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
    addressing: dict[str, plumbing.Addressing] = {}
    for plug in sample:
        addressing.setdefault(plug.bridge, seen[plug.netns][1])
    for plug in plugs:  # networks without a DHCP sample get the routes the plan expects
        net = by_netns[plug.netns].net
        addressing.setdefault(plug.bridge, plumbing.Addressing(20, 1450, net.expected_routes()))
    macs = {p.bridge: by_netns[p.netns].net.macs() for p in plugs}
    rest = [p for p in plugs if p not in set(sample)]
    progress(f"configuring {len(rest)} guests as DHCP configured the sample")
    plumbing.configure(rest, addressing, macs)
    return len(sample)


def _pin_server_side(
    config: NetagentConfig, nets: list[fleet.Net], members: list[fleet.Member]
) -> None:
    """Permanent neighbour entries for every guest on the port that answers it."""
    for net in nets:
        entries = [(m.ip, m.mac) for m in members if m.net is net]
        if net.router_id:
            netns, device = config.router_netns(net.router_id), f"qr-{net.router_port[:11]}"
        else:
            netns, device = config.dhcp_netns(net.id), f"ns-{net.dhcp_port[:11]}"
        plumbing.pin_neighbours(netns, device, entries)


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


def _targets(
    state: DemoState, chain: Chain, config: NetagentConfig, haproxies: list[int]
) -> dict[str, list[int]]:
    pids = chain.pids()
    found: dict[str, list[int]] = {"api": pids.get("api", []), "agent": pids.get("agent", [])}
    for number, pid in enumerate(pids.get("api-worker", []), 1):
        found[f"api-worker-{number}"] = [pid]
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
        title = (
            f"boot storm: {report['instances']} guests, {report['networks']} networks, "
            f"{report['proxy']} proxy; {report['requests']} requests, p99 {report['p99_ms']} ms"
        )
        plot(storm, title, plot_path)
