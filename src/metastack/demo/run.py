"""`demo up`, `status` and `down`: the whole chain and DHCP-booted guests on one machine."""

from __future__ import annotations

import base64
import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.demo import guests
from metastack.demo.state import DemoState, Guest, Process
from metastack.errors import MetastackError
from metastack.lab.chain import SERVICES, Chain, default_command, write_config
from metastack.netagent.config import load_netagent_config
from metastack.netagent.proxyproc import ProxyProcess
from metastack.netns.apply import delete_netns, list_netns
from metastack.netns.dnsmasq import unsearchable_folder

Progress = Callable[[str], None]
DEFAULT_WORKDIR = Path("/var/lib/metastack/demo")
DEMO_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetastackDemoKeyNotASecret00000000000 demo@metastack"
)
BOOT_CONCURRENCY = 8


class DemoError(MetastackError):
    """The demo cannot start or stop as asked."""


@dataclass(frozen=True)
class NetworkPlan:
    """One demo network: its project, CIDR and whether a router serves it."""

    key: str
    project: str
    cidr_prefix: str  # first three octets, e.g. "10.10.0"
    routed: bool


# The same CIDRs in both projects: overlapping guest addresses are the point.
NETWORKS = (
    NetworkPlan("a-routed", "demo-a", "10.10.0", True),
    NetworkPlan("a-isolated", "demo-a", "10.20.0", False),
    NetworkPlan("b-routed", "demo-b", "10.10.0", True),
    NetworkPlan("b-isolated", "demo-b", "10.20.0", False),
)


def _check_searchable(workdir: Path) -> None:
    """dnsmasq drops to `nobody` and re-reads its hosts file there on every reload."""
    workdir.chmod(0o755)
    folder = unsearchable_folder(workdir.resolve())
    if folder is not None:
        raise DemoError(
            f"{folder} is not searchable by other users, so dnsmasq (which runs as "
            "nobody) could not read its files; choose a --workdir under world-searchable "
            "folders"
        )


def _running_state(workdir: Path) -> DemoState | None:
    state = DemoState.load(workdir)
    if state is not None and any(p.alive() for p in state.processes):
        return state
    return None


def up(
    workdir: Path,
    instances: int,
    progress: Progress,
    *,
    control_port: int = 8774,
    metadata_port: int = 8775,
) -> DemoState:
    """Start every service, create two projects' networks, boot `instances` guests."""
    if _running_state(workdir) is not None:
        raise DemoError(f"a demo is already up in {workdir}; `metastack demo down` first")
    if DemoState.load(workdir) is not None:
        progress("removing what an earlier, failed run left")
        down(workdir, progress)
    run_id = secrets.token_hex(2)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_searchable(workdir)
    state = DemoState(str(workdir), run_id, f"ms-{run_id}-")
    state.made_etc_netns = not guests.ETC_NETNS.exists()
    state.save()
    try:
        chain = start_chain(state, control_port, metadata_port, progress)
        start_netagent(state, chain, progress)
        networks = _create_networks(chain, progress)
        _wait_for_namespaces(state, networks, progress)
        _boot(state, chain, networks, instances, progress)
    except BaseException:
        state.phase = "failed"
        state.save()
        raise
    state.phase = "up"
    state.save()
    return state


def start_chain(
    state: DemoState,
    control: int,
    metadata: int,
    progress: Progress,
    agent: Mapping[str, Any] | None = None,
) -> Chain:
    """Start the API (2 workers) and the agent, record them in `state`; 0 = any port.

    `agent`: extra agent settings (e.g. `metadata_proxy_user` of proxies that drop to it).
    """
    progress("starting metastack api (2 workers) and agent")
    # One node serves every network: the agent prefetches the ports of all of them.
    settings = {"prefetch_ports": "all", **(agent or {})}
    chain = Chain(Path(state.workdir) / "chain", api_workers=2, agent=settings)
    chain.control_port, chain.metadata_port = control, metadata
    try:
        chain.start_api()
        chain.start_agent()
        # The netagent runs the proxy (and restarts it if it dies); it only needs a config.
        write_config(
            chain.config_path("proxy"),
            "proxy",
            {
                "metadata_proxy_socket": str(chain.agent_socket),
                "control_socket": str(chain.proxy_socket),
            },
        )
    finally:  # record whatever did start, so `down` can stop it
        for service in SERVICES:
            running = chain.running(service)
            if running is not None:
                marker = str(chain.config_path(service))
                state.processes.append(Process(service, running.pid, marker))
        state.save()
    state.control_url, state.metadata_url = chain.control_url, chain.metadata_url
    state.admin_token = chain.admin_token
    state.save()
    return chain


def netagent_config(state: DemoState) -> Path:
    """Where the run's netagent config is written."""
    return Path(state.workdir) / "netagent.toml"


def start_netagent(
    state: DemoState, chain: Chain, progress: Progress, *, run_proxy: bool = True
) -> None:
    """Start the netagent; with `run_proxy` it also runs (and restarts) our proxy.

    Without it the netagent still builds namespaces, dnsmasq and the router redirect, but
    finds no proxy on its control socket and so holds no listeners (e.g. for haproxy).
    """
    progress("starting metastack netagent" + (", which runs the proxy" if run_proxy else ""))
    values: dict[str, Any] = {
        "control_url": chain.control_url,
        "admin_token": chain.admin_token,
        "host": "demo",
        "namespace_prefix": state.prefix,
        "fabric_netns": f"{state.prefix}fabric",
        "state_path": str(Path(state.workdir) / "netagent"),
        "proxy_control_socket": str(chain.proxy_socket),
        "resync_interval": 10.0,
    }
    if run_proxy:
        values["proxy_config"] = str(chain.config_path("proxy"))
    else:  # a socket nobody serves: the netagent skips listeners
        values["proxy_control_socket"] = str(Path(state.workdir) / "no-proxy.sock")
    write_config(netagent_config(state), "netagent", values)
    state.namespaces.append(f"{state.prefix}fabric")
    _spawn_netagent(state)


def _spawn_netagent(state: DemoState) -> Process:
    config = netagent_config(state)
    with (Path(state.workdir) / "netagent.log").open("ab") as log:
        process = subprocess.Popen(
            [*default_command(), "netagent", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Process("netagent", process.pid, str(config))
    state.processes = [p for p in state.processes if p.role != "netagent"] + [started]
    state.save()
    return started


def restart_netagent(workdir: Path, progress: Progress) -> Process:
    """Stop the demo's netagent and start it again: nothing that is right may change."""
    state = status(workdir)
    for process in state.processes:
        if process.role == "netagent":
            progress(f"stopping netagent (pid {process.pid})")
            process.stop()
    started = _spawn_netagent(state)
    progress(f"started netagent (pid {started.pid})")
    return started


def _create_networks(chain: Chain, progress: Progress) -> dict[str, dict[str, Any]]:
    progress("creating projects demo-a and demo-b, a routed and an isolated network in each")
    for project in ("demo-a", "demo-b"):
        chain.call("POST", "/v1/projects", {"id": project, "name": project})
    networks: dict[str, dict[str, Any]] = {}
    for plan in NETWORKS:
        network = chain.call(
            "POST", "/v1/networks", {"name": plan.key, "project_id": plan.project, "mtu": 1450}
        )
        subnet = chain.call(
            "POST",
            "/v1/subnets",
            {
                "network_id": network["id"],
                "cidr": f"{plan.cidr_prefix}.0/24",
                "ip_version": 4,
                "gateway_ip": f"{plan.cidr_prefix}.1",
            },
        )
        if plan.routed:
            router = chain.call(
                "POST", "/v1/routers", {"name": f"router-{plan.key}", "project_id": plan.project}
            )
            chain.call(
                "POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]}
            )
            network["router_id"] = router["id"]
        network["plan"] = plan
        networks[plan.key] = network
    return networks


def _wait_for_namespaces(
    state: DemoState, networks: dict[str, dict[str, Any]], progress: Progress
) -> None:
    wanted = {f"{state.prefix}qdhcp-{n['id']}" for n in networks.values()}
    wanted |= {
        f"{state.prefix}qrouter-{n['router_id']}" for n in networks.values() if "router_id" in n
    }
    wait_for_namespaces(state, wanted, progress)


def wait_for_namespaces(
    state: DemoState, wanted: set[str], progress: Progress, timeout: float = 60.0
) -> None:
    """Wait until the netagent has made every namespace in `wanted`; record them."""
    progress(f"waiting for the netagent: {len(wanted)} DHCP and router namespaces, dnsmasq")
    guests.wait_for(lambda: wanted <= set(list_netns()), timeout, "the netagent's namespaces")
    state.namespaces.extend(sorted(wanted))
    state.save()


def _boot(
    state: DemoState,
    chain: Chain,
    networks: dict[str, dict[str, Any]],
    count: int,
    progress: Progress,
) -> None:
    plans = list(networks.values())
    for index in range(count):
        network = plans[index % len(plans)]
        plan: NetworkPlan = network["plan"]
        name = f"demo-{index + 1}"
        user_data = f"#cloud-config\nhostname: {name}\nfinal_message: booted by metastack\n"
        instance = chain.call(
            "POST",
            "/v1/instances",
            {
                "name": name,
                "project_id": plan.project,
                "networks": [
                    {
                        "network_id": network["id"],
                        "ip_address": f"{plan.cidr_prefix}.{10 + index // len(plans)}",
                    }
                ],
                "key_name": "demo",
                "public_key": DEMO_KEY,
                "user_data": base64.b64encode(user_data.encode()).decode(),
                "metadata": {"demo": "metastack", "network": plan.key},
            },
        )
        port = chain.call("GET", f"/v1/ports?device_id={instance['uuid']}")["ports"][0]
        state.guests.append(
            Guest(
                name=name,
                uuid=instance["uuid"],
                namespace=f"{state.prefix}g{index + 1}",
                network_id=network["id"],
                network=plan.key,
                project_id=plan.project,
                mac=port["mac_address"],
            )
        )
    state.save()
    progress(f"booting {count} guests: DHCP (busybox udhcpc), then cloud-init")
    gateways = {n["id"]: f"{n['plan'].cidr_prefix}.1" for n in networks.values()}
    netagent = load_netagent_config(netagent_config(state))
    done = 0

    def boot_one(guest: Guest) -> Guest:
        files = guests.plug(
            guest.namespace,
            f"{state.prefix}fabric",
            netagent.bridge_name(guest.network_id),
            guest.namespace.removeprefix(state.prefix),
            guest.mac,
        )
        state.files.extend(files)
        try:
            guests.dhcp(guest.namespace)
        except MetastackError as exc:
            guest.error = f"DHCP failed: {exc}"
            return guest
        guest.ip = guests.address(guest.namespace)
        guest.path = guests.metadata_path(guest.namespace, gateways[guest.network_id])
        report = guests.cloud_init(guest.namespace)
        guest.seconds = float(report.get("seconds", 0.0))
        guest.hostname = str(report.get("local_hostname", ""))
        guest.cloud_init_ok = bool(report.get("ok")) and report.get("instance_id") == guest.uuid
        if not guest.cloud_init_ok:
            guest.error = str(report.get("error") or report.get("log", ""))[-300:]
        return guest

    with ThreadPoolExecutor(max_workers=BOOT_CONCURRENCY) as pool:
        for guest in pool.map(boot_one, state.guests):
            done += 1
            mark = "ok" if guest.cloud_init_ok else "FAILED"
            progress(
                f"  [{done}/{count}] {guest.name} {guest.ip or '-'} via {guest.path or '-'}: {mark}"
            )
            state.save()


def _proxy_of(state: DemoState) -> ProxyProcess | None:
    config = netagent_config(state)
    if not config.exists():
        return None
    netagent = load_netagent_config(config)
    if not netagent.proxy_config:
        return None
    return ProxyProcess(netagent.proxy_config, netagent.proxy_control_socket, netagent.state_path)


def services(state: DemoState) -> dict[str, int | None]:
    """PID of each demo service that runs now (None for one that does not)."""
    found: dict[str, int | None] = {p.role: (p.pid if p.alive() else None) for p in state.processes}
    proxy = _proxy_of(state)
    found["proxy"] = proxy.pid() if proxy is not None else None
    return found


def status(workdir: Path) -> DemoState:
    """The recorded demo, with every guest's namespace checked against the kernel."""
    state = DemoState.load(workdir)
    if state is None:
        raise DemoError(f"no demo in {workdir}; start one with `metastack demo up`")
    return state


def down(workdir: Path, progress: Progress) -> list[str]:
    """Stop and remove everything the demo in `workdir` created; returns what it removed."""
    state = DemoState.load(workdir)
    if state is None:
        return []
    removed: list[str] = []
    by_role = {p.role: p for p in state.processes}
    if "netagent" in by_role:
        progress("stopping the netagent")
        by_role["netagent"].stop()
    config = netagent_config(state)
    if config.exists():
        from metastack.netagent.service import teardown

        progress("removing DHCP and router namespaces, dnsmasq and proxy listeners")
        try:
            removed += teardown(load_netagent_config(config))
        except MetastackError as exc:
            progress(f"  netagent teardown: {exc} (namespaces are removed below)")
    for guest in state.guests:
        guests.remove(guest.namespace)
    proxy = _proxy_of(state)
    pid = proxy.pid() if proxy is not None else None
    if proxy is not None and pid is not None:
        progress(f"stopping proxy (pid {pid})")
        Process("proxy", pid, proxy.config_path).stop()
    for role in ("proxy", "agent", "api"):
        if role in by_role:
            progress(f"stopping {role} (pid {by_role[role].pid})")
            by_role[role].stop()
    for process in state.processes:  # any other recorded process (e.g. per-namespace proxies)
        process.stop()
    leftovers = [name for name in list_netns() if name.startswith(state.prefix)]
    delete_netns(leftovers)
    removed += leftovers
    for folder in state.files:
        shutil.rmtree(folder, ignore_errors=True)
    if state.made_etc_netns:
        with contextlib.suppress(OSError):  # only if empty: others may use it meanwhile
            guests.ETC_NETNS.rmdir()
    shutil.rmtree(workdir, ignore_errors=True)
    progress(f"removed {len(set(removed))} namespaces, {len(state.processes)} processes, {workdir}")
    return removed
