"""`demo up`, `status`, `down` and node power: the whole chain and DHCP-booted guests.

The single-node demo (the default) runs its services in the host's namespace; with more
than one API or network node each node is a namespace of its own (`cluster.py`).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metastack.demo import cluster, guests
from metastack.demo import nodes as lab
from metastack.demo.database import check_database, drop_database, ensure_database
from metastack.demo.errors import DemoError, DemoUsageError
from metastack.demo.state import DemoState, Node, Process
from metastack.demo.tenants import (
    DEMO_KEY,
    NETWORKS,
    NetworkPlan,
    Progress,
    boot,
    create_instances,
    create_networks,
    wait_for_namespaces,
)
from metastack.errors import MetastackError
from metastack.lab.chain import SERVICES, Chain, default_command, write_config
from metastack.netagent.config import load_netagent_config
from metastack.netagent.proxyproc import ProxyProcess
from metastack.netns.apply import delete_netns, list_netns
from metastack.netns.dnsmasq import unsearchable_folder

__all__ = [
    "DEFAULT_WORKDIR",
    "DEMO_KEY",
    "NETWORKS",
    "DemoError",
    "DemoUsageError",
    "NetworkPlan",
    "down",
    "netagent_config",
    "restart_netagent",
    "services",
    "start_chain",
    "start_netagent",
    "start_node",
    "status",
    "stop_node",
    "up",
    "wait_for_namespaces",
]

DEFAULT_WORKDIR = Path("/var/lib/metastack/demo")


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
    api_nodes: int = 1,
    network_nodes: int = 1,
    database: str = "",
) -> DemoState:
    """Start every service, create two projects' networks, boot `instances` guests.

    More than one API or network node: every node is a namespace of its own. DemoUsageError
    (before anything is created) for what cannot run: several API nodes without PostgreSQL.
    """
    multi = api_nodes > 1 or network_nodes > 1
    if max(api_nodes, network_nodes) > lab.MAX_NODES or min(api_nodes, network_nodes) < 1:
        raise DemoUsageError(f"1 to {lab.MAX_NODES} API nodes and network nodes")
    check_database(database, api_nodes, in_namespaces=multi)
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
        if multi:
            cluster.start(
                state,
                instances,
                progress,
                api_nodes=api_nodes,
                network_nodes=network_nodes,
                database=database,
                control_port=control_port,
            )
        else:
            _single(state, instances, progress, control_port, metadata_port, database)
    except BaseException:
        state.phase = "failed"
        state.save()
        raise
    state.phase = "up"
    state.save()
    return state


def _single(
    state: DemoState,
    instances: int,
    progress: Progress,
    control_port: int,
    metadata_port: int,
    database: str,
) -> None:
    """Today's demo: api, agent and netagent (with the proxy) in the host's namespace."""
    if database:
        state.created_database = ensure_database(database)
        state.database_url = database
        state.save()
    api = {"database_url": database} if database else None
    chain = start_chain(state, control_port, metadata_port, progress, api=api)
    start_netagent(state, chain, progress)
    networks = create_networks(chain.call, progress)
    state.nodes = _single_nodes(state, networks)
    state.save()
    _wait_for_namespaces(state, networks, progress)
    create_instances(state, chain.call, networks, instances)
    netagent = load_netagent_config(netagent_config(state))
    boot(state, networks, netagent.bridge_name, progress)


def _single_nodes(state: DemoState, networks: dict[str, dict[str, Any]]) -> list[Node]:
    """The single-node demo's two nodes: the host, as API node and as network node."""
    workdir = Path(state.workdir)
    return [
        Node("api-1", "api", None, "127.0.0.1", str(workdir / "chain")),
        Node(
            "net-1",
            "network",
            None,
            "127.0.0.1",
            str(workdir / "netagent"),
            netns_prefix=state.prefix,
            networks=[n["id"] for n in networks.values()],
            routers=[n["router_id"] for n in networks.values() if "router_id" in n],
        ),
    ]


def start_chain(
    state: DemoState,
    control: int,
    metadata: int,
    progress: Progress,
    agent: Mapping[str, Any] | None = None,
    api: Mapping[str, Any] | None = None,
) -> Chain:
    """Start the API (2 workers) and the agent, record them in `state`; 0 = any port.

    `agent`, `api`: extra settings (e.g. `metadata_proxy_user` of proxies that drop to it,
    `database_url`).
    """
    progress("starting metastack api (2 workers) and agent")
    # One node serves every network: the agent prefetches the ports of all of them.
    settings = {"prefetch_ports": "all", **(agent or {})}
    chain = Chain(Path(state.workdir) / "chain", api_workers=2, agent=settings, api=api or {})
    chain.control_port, chain.metadata_port = control, metadata
    try:
        chain.start_api()
        _pin_ports(chain)
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
                node = "api-1" if service == "api" else "net-1"
                argv = [str(arg) for arg in running.process.args]  # type: ignore[union-attr]
                log = str(chain.log_path(service))
                state.processes.append(Process(service, running.pid, marker, node, argv, log))
        state.save()
    state.control_url, state.metadata_url = chain.control_url, chain.metadata_url
    state.admin_token = chain.admin_token
    state.save()
    return chain


def _pin_ports(chain: Chain) -> None:
    """Write the ports the API got into its config, so a start again listens there."""
    path = chain.config_path("api")
    values = tomllib.loads(path.read_text())["api"]
    values["control_listen"] = f"{chain.host}:{chain.control_port}"
    values["metadata_listen"] = f"{chain.host}:{chain.metadata_port}"
    write_config(path, "api", values)


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
    argv = [*default_command(), "netagent", "--config", str(config)]
    log = Path(state.workdir) / "netagent.log"
    return lab.spawn(state, "net-1", "netagent", argv, str(config), log)


def restart_netagent(workdir: Path, progress: Progress) -> list[Process]:
    """Stop every netagent of the demo and start it again: nothing that is right may change."""
    state = status(workdir)
    started = []
    for process in [p for p in state.processes if p.role == "netagent"]:
        progress(f"stopping the netagent of {process.node} (pid {process.pid})")
        process.stop()
        again = lab.restart(state, process)
        progress(f"started the netagent of {process.node} (pid {again.pid})")
        started.append(again)
    return started


def _wait_for_namespaces(
    state: DemoState, networks: dict[str, dict[str, Any]], progress: Progress
) -> None:
    wanted = {f"{state.prefix}qdhcp-{n['id']}" for n in networks.values()}
    wanted |= {
        f"{state.prefix}qrouter-{n['router_id']}" for n in networks.values() if "router_id" in n
    }
    wait_for_namespaces(state, wanted, progress)


def _proxy_of(config: Path) -> ProxyProcess | None:
    """The proxy a netagent with this config runs, if it runs one."""
    if not config.exists():
        return None
    netagent = load_netagent_config(config)
    if not netagent.proxy_config:
        return None
    return ProxyProcess(netagent.proxy_config, netagent.proxy_control_socket, netagent.state_path)


def _netagent_configs(state: DemoState) -> list[Path]:
    recorded = [Path(p.marker) for p in state.processes if p.role == "netagent"]
    return recorded or [netagent_config(state)]


def services(state: DemoState) -> dict[str, int | None]:
    """PID of each demo service that runs now (None for one that does not); one node's
    services per role (the single-node demo's)."""
    found: dict[str, int | None] = {p.role: (p.pid if p.alive() else None) for p in state.processes}
    proxy = _proxy_of(_netagent_configs(state)[0])
    found["proxy"] = proxy.pid() if proxy is not None else None
    return found


def status(workdir: Path) -> DemoState:
    """The recorded demo, with every guest's namespace checked against the kernel."""
    state = DemoState.load(workdir)
    if state is None:
        raise DemoError(f"no demo in {workdir}; start one with `metastack demo up`")
    return state


def nodes_up(state: DemoState) -> dict[str, bool]:
    """Node name -> whether it is up (links up, every process running)."""
    return {node.name: lab.node_up(state, node) for node in state.nodes}


def _node(state: DemoState, name: str) -> Node:
    node = state.node(name)
    if node is None:
        names = ", ".join(n.name for n in state.nodes) or "none"
        raise DemoError(f"no node {name!r} in this demo (its nodes: {names})")
    return node


def stop_node(workdir: Path, name: str, progress: Progress) -> None:
    """Power loss of a node: its links down, its processes SIGKILLed."""
    state = status(workdir)
    node = _node(state, name)
    links, pids = lab.power_off(state, node)
    progress(f"{name}: {links} links down, {len(pids)} processes killed ({pids})")


def start_node(workdir: Path, name: str, progress: Progress) -> None:
    """Bring a stopped node back: links up, its processes started again."""
    state = status(workdir)
    node = _node(state, name)
    started = lab.power_on(state, node)
    progress(f"{name}: links up, started {', '.join(f'{p.role} ({p.pid})' for p in started)}")


def _stop_roles(state: DemoState, progress: Progress) -> None:
    order = {role: index for index, role in enumerate(("proxy", "agent", "api", "forward"))}
    for process in sorted(state.processes, key=lambda p: order.get(p.role, len(order))):
        if process.alive():
            where = f" of {process.node}" if process.node else ""
            progress(f"stopping {process.role}{where} (pid {process.pid})")
            process.stop()


def down(workdir: Path, progress: Progress) -> list[str]:
    """Stop and remove everything the demo in `workdir` created; returns what it removed."""
    state = DemoState.load(workdir)
    if state is None:
        return []
    removed: list[str] = []
    for process in state.processes:
        if process.role == "netagent" and process.alive():
            progress(f"stopping the netagent of {process.node or 'the demo'}")
            process.stop()
    proxies = []
    for config in _netagent_configs(state):
        if not config.exists():
            continue
        from metastack.netagent.service import teardown

        progress(f"removing the DHCP and router namespaces, dnsmasq and listeners of {config}")
        proxies.append(_proxy_of(config))
        try:
            removed += teardown(load_netagent_config(config))
        except MetastackError as exc:
            progress(f"  netagent teardown: {exc} (namespaces are removed below)")
    for guest in state.guests:
        guests.remove(guest.namespace)
    for proxy in proxies:
        pid = proxy.pid() if proxy is not None else None
        if proxy is not None and pid is not None:
            progress(f"stopping proxy (pid {pid})")
            Process("proxy", pid, proxy.config_path).stop()
    _stop_roles(state, progress)
    for node in state.nodes:  # anything else a node's pid files name (keepalived, later)
        for process in lab.pidfile_processes(state, node):
            process.stop()
    leftovers = [name for name in list_netns() if name.startswith(state.prefix)]
    delete_netns(leftovers)
    removed += leftovers
    for folder in state.files:
        shutil.rmtree(folder, ignore_errors=True)
    if state.made_etc_netns:
        with contextlib.suppress(OSError):  # only if empty: others may use it meanwhile
            guests.ETC_NETNS.rmdir()
    if state.created_database:
        progress(f"dropping the database the demo created ({state.database_url})")
        try:
            drop_database(state.database_url)
        except DemoError as exc:
            progress(f"  {exc}")
    shutil.rmtree(workdir, ignore_errors=True)
    progress(f"removed {len(set(removed))} namespaces, {len(state.processes)} processes, {workdir}")
    return removed
