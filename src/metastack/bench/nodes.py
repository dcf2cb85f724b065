"""The benchmarks' own runs: the demo's machinery in a private folder, prefix and database.

Every run gets a new folder under /var/tmp, a namespace prefix `ms-<run>-` and, on
PostgreSQL, a database of its own (`<name>_<run>` on the server `--database` names,
created at the start and dropped at the end), so a benchmark runs beside a demo (which
keeps /var/lib/metastack/demo, port 8774 and its own database) and beside another
benchmark. With several nodes it is the demo's cluster (`demo/cluster.py`): every node a
namespace on the management bridge of the run's own fabric namespace, the host's control
calls through the relay on an ephemeral loopback port.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from metastack.demo import cluster, guests
from metastack.demo import nodes as lab
from metastack.demo.database import check_database as demo_check_database
from metastack.demo.errors import DemoUsageError
from metastack.demo.run import down
from metastack.demo.state import DemoState
from metastack.lab.chain import child_pids, control_call
from metastack.netagent.config import NetagentConfig, load_netagent_config
from metastack.netns.apply import delete_netns
from metastack.netns.exec import NetnsError
from metastack.proxy.client import ProxyClient

Progress = Callable[[str], None]
# One control API call: (method, path, body=None, timeout=...) -> the decoded answer.
Call = Callable[..., Any]
SOCKET_DIR_EXAMPLE = "postgresql+psycopg://postgres@/metastack_bench?host=/var/run/postgresql"


def check_database(url: str, api_nodes: int, *, in_namespaces: bool) -> None:
    """What the demo refuses (several API nodes without PostgreSQL, a URL namespaces cannot
    reach), and a SQLite URL: SQLite is the default, a file in the run's folder."""
    if url and make_url(url).get_backend_name() == "sqlite":
        raise DemoUsageError(
            f"--database {url!r}: SQLite is the default (a file in the run's folder); "
            f"--database takes a PostgreSQL URL ({SOCKET_DIR_EXAMPLE})"
        )
    demo_check_database(url, api_nodes, in_namespaces=in_namespaces)


def run_database(url: str, run_id: str) -> str:
    """The run's own database on the server of `url`: its name with `_<run>` appended
    ("" stays "": SQLite)."""
    if not url:
        return ""
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{run_id}").render_as_string(hide_password=False)


def database_kind(url: str) -> str:
    """`postgresql` or `sqlite`, for reports (never the URL: it may hold a password)."""
    return make_url(url).get_backend_name() if url else "sqlite"


def new_state(workdir: Path | None) -> DemoState:
    """A new run's record in `workdir` (default: a new folder under /var/tmp)."""
    folder = workdir or Path(tempfile.mkdtemp(prefix="ms-bench-", dir="/var/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # dnsmasq (nobody) and haproxy (nobody) read files under it
    run_id = secrets.token_hex(3)
    state = DemoState(str(folder), run_id, f"ms-{run_id}-")
    state.made_etc_netns = not guests.ETC_NETNS.exists()
    state.save()
    return state


def remove(state: DemoState, progress: Progress) -> None:
    """Remove everything the run made: guests (in one batch), then what `demo down` removes
    (processes of every node, namespaces, files, the run's database, the folder)."""
    progress("removing everything this run created")
    names = [g.namespace for g in state.guests]
    try:
        delete_netns(names)
    except NetnsError:
        pass  # down() tries each one again
    else:
        for name in names:
            shutil.rmtree(guests.ETC_NETNS / name, ignore_errors=True)
        state.guests = []
        state.save()
    down(Path(state.workdir), progress)


def start_api_nodes(
    state: DemoState, progress: Progress, api_nodes: int, network_nodes: int, database: str
) -> cluster.Cluster:
    """The fabric and the API nodes on `database` ("" = SQLite), their control APIs
    reached from here through a relay on an ephemeral loopback port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return cluster.start_api_nodes(
            state,
            progress,
            api_nodes=api_nodes,
            network_nodes=network_nodes,
            database=database,
            listener=listener,
        )


def control(state: DemoState) -> Call:
    """Control API calls with the run's admin token (through the relay, with several nodes)."""
    return functools.partial(control_call, state.control_url, state.admin_token)


@dataclass(frozen=True)
class Server:
    """A network node as a benchmark sees it: its netagent's config (namespace names, proxy
    socket, DHCP port owner) and the qdhcp-/qrouter- namespaces it serves."""

    name: str
    config: NetagentConfig
    namespaces: frozenset[str]

    def serves_router(self, router_id: str) -> bool:
        """Whether the router's namespace is this node's."""
        return self.config.router_netns(router_id) in self.namespaces

    def serves_network(self, network_id: str) -> bool:
        """Whether the network's DHCP namespace is this node's."""
        return self.config.dhcp_netns(network_id) in self.namespaces


def servers(state: DemoState, wanted: Iterable[str]) -> list[Server]:
    """The run's network nodes and which of the `wanted` namespaces each serves."""
    found = []
    for node in state.nodes:
        if node.role != "network":
            continue
        config = load_netagent_config(Path(node.directory) / "netagent.toml")
        prefix = config.namespace_prefix
        mine = {n for n in wanted if n.startswith((f"{prefix}qdhcp-", f"{prefix}qrouter-"))}
        found.append(Server(node.name, config, frozenset(mine)))
    return found


def targets(state: DemoState) -> dict[str, list[int]]:
    """Name -> PIDs of every process of the run's nodes, for the sampler: `api-1` (the
    parent) and `api-1-worker-N`, `net-1-agent`, `net-1-netagent`, `net-1-proxy`, and every
    dnsmasq together, plus this process (`generator`)."""
    found: dict[str, list[int]] = {}
    dnsmasqs: list[int] = []
    for node in state.nodes:
        for process in state.processes_of(node.name):
            if not process.alive():
                continue
            if process.role == "api":
                found[node.name] = [process.pid]
                for number, pid in enumerate(child_pids(process.pid), 1):
                    found[f"{node.name}-worker-{number}"] = [pid]
            else:
                found[f"{node.name}-{process.role}"] = [process.pid]
        for process in lab.pidfile_processes(state, node):
            if process.role == "dnsmasq":
                dnsmasqs.append(process.pid)
            else:
                found[f"{node.name}-{process.role}"] = [process.pid]
    found["dnsmasq"] = dnsmasqs
    found["generator"] = [os.getpid()]
    return found


def wait_for_listeners(server: Server, namespaces: set[str], timeout: float) -> None:
    """Wait until the node's proxy holds a listener in every one of `namespaces`."""
    client = ProxyClient(server.config.proxy_control_socket, timeout=5.0)

    def held() -> bool:
        try:
            status, doc = client.listeners()
        except Exception:
            return False
        have = {item.get("netns") for item in doc.get("listeners", [])} if status == 200 else set()
        return namespaces <= have

    guests.wait_for(held, timeout, f"the proxy of {server.name}: its listeners")
