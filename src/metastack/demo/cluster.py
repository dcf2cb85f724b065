"""`demo up --api-nodes M --network-nodes N`: several nodes, as OpenStack deploys them.

API nodes run `metastack api` on their management address (with the admin token, as
any control API off loopback must), all on one database; network nodes run the agent,
the netagent and, through it, the proxy and dnsmasq. Every network node plugs its
qdhcp-/qrouter- namespaces (prefixed with its own name) into the same tenant bridges in
the fabric namespace, so each tenant network is one L2 segment served by two nodes.
The host reaches the control API through a loopback relay (`forward.py`).
"""

from __future__ import annotations

import functools
import secrets
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.demo import nodes as lab
from metastack.demo.database import ensure_database
from metastack.demo.schedule import Serves, netagent_lists, schedule
from metastack.demo.state import DemoState, Node, Process
from metastack.demo.tenants import (
    Progress,
    boot,
    create_instances,
    create_networks,
    wait_for_namespaces,
)
from metastack.lab.chain import control_call, default_command, write_config
from metastack.netagent.config import load_netagent_config


def token_file(state: DemoState) -> Path:
    """The admin token every node reads (`admin_token_file`) and users `cat`."""
    return Path(state.workdir) / "token"


def _folder(node: Node) -> Path:
    folder = Path(node.directory)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # dnsmasq (nobody) reads a network node's files below it
    return folder


def start(
    state: DemoState,
    instances: int,
    progress: Progress,
    *,
    api_nodes: int,
    network_nodes: int,
    database: str,
    control_port: int,
) -> None:
    """Bring up the nodes, the tenant networks scheduled over them, and the guests."""
    # Bound first: a port in use stops the demo before it has made anything.
    with socket.create_server(("127.0.0.1", control_port)) as listener:
        _start(state, instances, progress, api_nodes, network_nodes, database, listener)


def _start(
    state: DemoState,
    instances: int,
    progress: Progress,
    api_nodes: int,
    network_nodes: int,
    database: str,
    listener: socket.socket,
) -> None:
    cluster = start_api_nodes(
        state,
        progress,
        api_nodes=api_nodes,
        network_nodes=network_nodes,
        database=database,
        listener=listener,
    )
    call = functools.partial(control_call, state.control_url, state.admin_token)
    networks = create_networks(call, progress)
    wanted = start_network_nodes(
        state,
        cluster,
        [n["id"] for n in networks.values()],
        [n["router_id"] for n in networks.values() if "router_id" in n],
        progress,
    )
    wait_for_namespaces(state, wanted, progress)
    create_instances(state, call, networks, instances)
    template = load_netagent_config(Path(cluster.network[0].directory) / "netagent.toml")
    boot(state, networks, template.bridge_name, progress)


@dataclass
class Cluster:
    """A multi-node run's nodes once its API nodes serve: the fabric namespace, the secret
    agents and APIs share, and the nodes of each role."""

    fabric: str
    secret: str
    api: list[Node]
    network: list[Node]


def start_api_nodes(
    state: DemoState,
    progress: Progress,
    *,
    api_nodes: int,
    network_nodes: int,
    database: str,
    listener: socket.socket,
) -> Cluster:
    """The fabric, the plan of every node, the API nodes on `database` (created if
    missing; "" = SQLite in the first API node's folder) and the relay of `listener` (the
    host's loopback) to their control APIs: `state.control_url`. Everything it makes is
    recorded in `state` as it goes, for `down`."""
    fabric = f"{state.prefix}fabric"
    state.admin_token = secrets.token_urlsafe(24)
    token_file(state).write_text(state.admin_token + "\n")
    token_file(state).chmod(0o600)
    secret = secrets.token_urlsafe(24)
    if database:
        state.created_database = ensure_database(database)
        state.database_url = database
        state.save()
    progress(f"creating the fabric with the management network {lab.MGMT_NET}.0/24")
    state.namespaces.append(fabric)
    state.save()
    lab.make_fabric(fabric)
    state.nodes = lab.plan_nodes(state, api_nodes, network_nodes)
    state.save()
    api = [node for node in state.nodes if node.role == "api"]
    network = [node for node in state.nodes if node.role == "network"]
    url = database or f"sqlite:///{Path(api[0].directory) / 'metastack.sqlite'}"
    for node in api:
        progress(f"starting {node.name}: metastack api on {node.address} ({node.namespace})")
        _make_node(state, fabric, node)
        _start_api(state, node, url, secret)
    _start_forward(state, fabric, api, listener)
    return Cluster(fabric, secret, api, network)


def start_network_nodes(
    state: DemoState,
    cluster: Cluster,
    networks: Sequence[str],
    routers: Sequence[str],
    progress: Progress,
    *,
    agent: Mapping[str, Mapping[str, Any]] | None = None,
) -> set[str]:
    """Schedule `networks` and `routers` over the network nodes and start each node;
    the qdhcp-/qrouter- namespaces they are to make (wait for them). `agent`: extra agent
    settings by node name (e.g. a node's `metadata_endpoints` narrowed to one API node)."""
    wanted = _schedule(state, networks, routers, cluster.network)
    for node in cluster.network:
        progress(
            f"starting {node.name} ({node.address}): agent, netagent with the proxy and "
            f"dnsmasq; {len(node.networks)} networks, {len(node.routers)} routers"
        )
        _make_node(state, cluster.fabric, node)
        extra = (agent or {}).get(node.name, {})
        _start_network_node(state, node, cluster.api, cluster.fabric, cluster.secret, extra)
    return wanted


def _schedule(
    state: DemoState, networks: Sequence[str], routers: Sequence[str], network: list[Node]
) -> set[str]:
    """Give the network nodes what they serve; the namespaces that makes them build."""
    served = schedule(networks, routers, [node.name for node in network])
    wanted: set[str] = set()
    for node in network:
        node.networks, node.routers = served[node.name].networks, served[node.name].routers
        wanted |= {f"{node.netns_prefix}qdhcp-{n}" for n in node.networks}
        wanted |= {f"{node.netns_prefix}qrouter-{r}" for r in node.routers}
    state.save()
    return wanted


def _make_node(state: DemoState, fabric: str, node: Node) -> None:
    _folder(node)
    if node.namespace is not None:
        state.namespaces.append(node.namespace)
        state.save()
        lab.make_node_namespace(fabric, node)


def _spawn_service(state: DemoState, node: Node, service: str, extra: list[str]) -> Process:
    folder = Path(node.directory)
    config = folder / f"{service}.toml"
    argv = [*lab.enter(node), *default_command(), service, "--config", str(config), *extra]
    started = lab.spawn(state, node.name, service, argv, str(config), folder / f"{service}.log")
    lab.wait_ready(started)
    return started


def _start_api(state: DemoState, node: Node, database: str, secret: str) -> None:
    values: dict[str, Any] = {
        "database_url": database,
        "metadata_proxy_shared_secret": secret,
        "admin_token_file": str(token_file(state)),
        "control_listen": f"{node.address}:{lab.CONTROL_PORT}",
        "metadata_listen": f"{node.address}:{lab.METADATA_PORT}",
        "workers": 1,
    }
    write_config(Path(node.directory) / "api.toml", "api", values)
    _spawn_service(state, node, "api", [])


def _start_network_node(
    state: DemoState,
    node: Node,
    api: list[Node],
    fabric: str,
    secret: str,
    agent: Mapping[str, Any],
) -> None:
    folder = Path(node.directory)
    agent_socket, proxy_socket = folder / "agent.sock", folder / "proxy.sock"
    # Until the agent takes a list of control APIs, it follows the first API node's.
    control_url = f"http://{api[0].address}:{lab.CONTROL_PORT}"
    write_config(
        folder / "agent.toml",
        "agent",
        {
            "metadata_proxy_socket": str(agent_socket),
            "metadata_proxy_shared_secret": secret,
            "admin_token_file": str(token_file(state)),
            "metadata_endpoints": [f"http://{n.address}:{lab.METADATA_PORT}" for n in api],
            "control_url": control_url,
            "prefetch_ports": "all",
            **agent,
        },
    )
    write_config(
        folder / "proxy.toml",
        "proxy",
        {"metadata_proxy_socket": str(agent_socket), "control_socket": str(proxy_socket)},
    )
    networks, routers = netagent_lists(Serves(node.networks, node.routers))
    write_config(
        folder / "netagent.toml",
        "netagent",
        {
            "control_url": control_url,
            "admin_token_file": str(token_file(state)),
            "host": node.name,
            "namespace_prefix": node.netns_prefix,
            "fabric_netns": fabric,
            "state_path": str(folder),
            "proxy_control_socket": str(proxy_socket),
            "proxy_config": str(folder / "proxy.toml"),
            "resync_interval": 10.0,
            "networks": networks,
            "routers": routers,
        },
    )
    _spawn_service(state, node, "agent", ["--log-level", "INFO"])
    _spawn_service(state, node, "netagent", [])
    # keepalived (VRRP for HA routers) will be started here, with its pid files (-p, -r,
    # -c) under the node's folder, where stop-node finds and kills it.


def _start_forward(state: DemoState, fabric: str, api: list[Node], listener: socket.socket) -> None:
    """Relay the host's 127.0.0.1 `listener` to the API nodes from inside the fabric
    namespace (see forward.py); the relay gets its own copy of the socket."""
    marker = f"{state.workdir}/control-forward"
    argv = [
        *lab.enter_netns(fabric),
        sys.executable, "-m", "metastack.demo.forward", "--fd", str(listener.fileno()),
        *(arg for n in api for arg in ("--to", f"{n.address}:{lab.CONTROL_PORT}")),
        "--name", marker,
    ]  # fmt: skip
    log = Path(state.workdir) / "control-forward.log"
    lab.spawn(state, "", "forward", argv, marker, log, pass_fds=(listener.fileno(),))
    state.control_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    state.metadata_url = f"http://{api[0].address}:{lab.METADATA_PORT}"
    state.save()
