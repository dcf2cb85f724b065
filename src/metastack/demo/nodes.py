"""The demo's nodes: their namespaces on the management network, processes and power.

In the multi-node demo every node is a network namespace of its own (`<run>api-1`,
`<run>net-2`) plugged into the management bridge in the fabric namespace, with its own
processes (started in it with `nsenter --net`, so they keep the host's mount namespace
and a network node's netagent can still create namespaces everyone sees) and its own
folder. In the single-node demo the two nodes are the host itself.
"""

from __future__ import annotations

import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from metastack.demo.errors import DemoError
from metastack.demo.state import DemoState, Node, Process
from metastack.lab.chain import SERVICES
from metastack.netns.apply import list_netns
from metastack.netns.exec import NetnsError, run
from metastack.netns.inspect import read_links
from metastack.netns.sockets import netns_path, unix_socket_accepts

# 10.255.0.0/24 exists only inside the lab's namespaces, apart from the tenant CIDRs the
# demo and its tests use (10.10.0.0/24, 10.20.0.0/24, 10.99.0.0/24).
MGMT_NET = "10.255.0"
MGMT_PREFIXLEN = 24
MGMT_BRIDGE = "ms-mgmt"
FABRIC_ADDRESS = f"{MGMT_NET}.1"  # the fabric's own address: the host's loopback relay
NODE_LINK = "mgmt0"
CONTROL_PORT = 8774
METADATA_PORT = 8775
MAX_NODES = 8  # of each role: the API nodes are .11-.18, the network nodes .101-.108
READY_TIMEOUT = 30.0


def api_address(index: int) -> str:
    """The management address of API node `index` (from 1)."""
    return f"{MGMT_NET}.{10 + index}"


def network_address(index: int) -> str:
    """The management address of network node `index` (from 1)."""
    return f"{MGMT_NET}.{100 + index}"


def plan_nodes(state: DemoState, api_nodes: int, network_nodes: int) -> list[Node]:
    """The nodes of a multi-node run: names, namespaces, addresses, folders."""
    workdir = Path(state.workdir)
    nodes = [
        Node(f"api-{i}", "api", f"{state.prefix}api-{i}", api_address(i), str(workdir / f"api-{i}"))
        for i in range(1, api_nodes + 1)
    ]
    nodes += [
        Node(
            f"net-{i}",
            "network",
            f"{state.prefix}net-{i}",
            network_address(i),
            str(workdir / f"net-{i}"),
            netns_prefix=f"{state.prefix}net-{i}-",
        )
        for i in range(1, network_nodes + 1)
    ]
    return nodes


def make_fabric(fabric: str) -> None:
    """The fabric namespace with the management bridge (its own address: FABRIC_ADDRESS)."""
    run(["ip", "netns", "add", fabric])
    batch = [
        "link set lo up",
        f"link add {MGMT_BRIDGE} type bridge",
        f"addr add {FABRIC_ADDRESS}/{MGMT_PREFIXLEN} dev {MGMT_BRIDGE}",
        f"link set {MGMT_BRIDGE} up",
    ]
    run(["ip", "-n", fabric, "-batch", "-"], input="\n".join(batch) + "\n")


def make_node_namespace(fabric: str, node: Node) -> None:
    """The node's namespace, its `mgmt0` on the management bridge (veth made in the fabric
    with its peer moved straight into the node: nothing touches the host's namespace)."""
    if node.namespace is None:
        raise DemoError(f"{node.name} has no namespace of its own")
    run(["ip", "netns", "add", node.namespace])
    port = f"m-{node.name}"
    fabric_side = [
        f"link add {port} type veth peer name {NODE_LINK} netns {node.namespace}",
        f"link set {port} master {MGMT_BRIDGE}",
        f"link set {port} up",
    ]
    run(["ip", "-n", fabric, "-batch", "-"], input="\n".join(fabric_side) + "\n")
    inside = [
        "link set lo up",
        f"addr add {node.address}/{MGMT_PREFIXLEN} dev {NODE_LINK}",
        f"link set {NODE_LINK} up",
    ]
    run(["ip", "-n", node.namespace, "-batch", "-"], input="\n".join(inside) + "\n")


def enter_netns(namespace: str) -> list[str]:
    """The argv prefix that runs a command in a network namespace (and nothing else: the
    host's mount namespace stays, so `ip netns add` there is seen by everyone)."""
    return ["nsenter", f"--net={netns_path(namespace)}", "--"]


def enter(node: Node) -> list[str]:
    """The argv prefix that runs a command in the node's network namespace."""
    return enter_netns(node.namespace) if node.namespace is not None else []


def spawn(
    state: DemoState,
    node: str,
    role: str,
    argv: list[str],
    marker: str,
    log: Path,
    pass_fds: tuple[int, ...] = (),
) -> Process:
    """Start `argv` (its own session) as `role` of `node`, record it in `state`."""
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    started = Process(role, child.pid, marker, node=node, argv=list(argv), log=str(log))
    state.processes = [p for p in state.processes if not (p.node == node and p.role == role)]
    state.processes.append(started)
    state.save()
    return started


def _config(path: str, section: str) -> dict[str, object]:
    try:
        loaded = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    values = loaded.get(section, {})
    return values if isinstance(values, dict) else {}


def _log_since(process: Process, offset: int) -> str:
    try:
        with Path(process.log).open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _ready_check(process: Process, offset: int) -> Callable[[], bool]:
    if process.role == "api":
        return lambda: all(
            f"{api} API listening on" in _log_since(process, offset)
            for api in ("control", "metadata")
        )
    if process.role == "agent":
        socket = str(_config(process.marker, "agent").get("metadata_proxy_socket", ""))
        return lambda: unix_socket_accepts(socket)
    if process.role == "netagent":
        values = _config(process.marker, "netagent")
        if values.get("proxy_config"):
            socket = str(values.get("proxy_control_socket", ""))
            return lambda: unix_socket_accepts(socket)
    return lambda: True


def wait_ready(process: Process, offset: int = 0, timeout: float = READY_TIMEOUT) -> None:
    """Wait until a started service serves (API: both listeners logged; agent: its socket;
    netagent: the proxy it runs); DemoError with the log's tail if it dies or is late."""
    ready = _ready_check(process, offset)
    deadline = time.monotonic() + timeout
    while not ready():
        if not process.alive() or time.monotonic() > deadline:
            what = "exited" if not process.alive() else f"is not ready after {timeout:.0f} s"
            tail = _log_since(process, offset)[-3000:]
            raise DemoError(f"{process.role} of {process.node or 'the demo'} {what}; log:\n{tail}")
        time.sleep(0.05)


def restart(state: DemoState, process: Process) -> Process:
    """Start a recorded process again with its recorded argv and log; wait until ready."""
    log = Path(process.log)
    offset = log.stat().st_size if log.exists() else 0
    started = spawn(state, process.node, process.role, process.argv, process.marker, log)
    wait_ready(started, offset)
    return started


# -- what belongs to a node -------------------------------------------------------------


def service_namespaces(state: DemoState, node: Node) -> list[str]:
    """A network node's qdhcp-/qrouter- namespaces as they exist now."""
    if node.role != "network":
        return []
    prefix = node.netns_prefix or state.prefix
    starts = (f"{prefix}qdhcp-", f"{prefix}qrouter-")
    return [name for name in list_netns() if name.startswith(starts)]


def node_links(state: DemoState, node: Node) -> list[tuple[str, str]]:
    """(namespace, link) of every link of the node but loopbacks: its own namespace's and
    its qdhcp-/qrouter- namespaces' ports. Never the host's: a node without a namespace
    (the single-node demo) has only its service namespaces."""
    namespaces = ([node.namespace] if node.namespace else []) + service_namespaces(state, node)
    links: list[tuple[str, str]] = []
    for namespace in namespaces:
        try:
            found = read_links(namespace)
        except NetnsError:
            continue  # deleted meanwhile
        links += [(namespace, name) for name in sorted(found) if name != "lo"]
    return links


def set_links(links: list[tuple[str, str]], up: bool) -> None:
    """Bring links down or up, one `ip -batch` per namespace."""
    by_namespace: dict[str, list[str]] = {}
    for namespace, link in links:
        by_namespace.setdefault(namespace, []).append(link)
    for namespace, names in by_namespace.items():
        batch = "".join(f"link set {name} {'up' if up else 'down'}\n" for name in names)
        run(["ip", "-n", namespace, "-batch", "-"], input=batch, check=False)


def pidfile_processes(state: DemoState, node: Node) -> list[Process]:
    """Processes known by a pid file under the node's folder (the proxy, dnsmasqs, and
    later keepalived), each only while its command line names this demo's folder."""
    found: list[Process] = []
    folder = Path(node.directory)
    if not folder.is_dir():
        return found
    for pidfile in sorted([*folder.rglob("pid"), *folder.rglob("*.pid")]):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        role = "dnsmasq" if pidfile.name == "pid" else pidfile.stem
        process = Process(role, pid, state.workdir, node=node.name)
        if process.alive():
            found.append(process)
    return found


# Stopped first, so it restarts nothing while the others go.
SUPERVISORS = ("netagent",)


def node_processes(state: DemoState, node: Node) -> list[Process]:
    """Every live process of a node: recorded ones (supervisors first), then pid files."""
    recorded = sorted(
        (p for p in state.processes_of(node.name) if p.alive()),
        key=lambda p: (p.role not in SUPERVISORS, p.role),
    )
    return recorded + pidfile_processes(state, node)


def node_up(state: DemoState, node: Node) -> bool:
    """True when the node's namespace (if any) has its links up and every recorded process
    of it runs (a network node's proxy too)."""
    if node.namespace is not None:
        if node.namespace not in list_netns():
            return False
        try:
            links = read_links(node.namespace)
        except NetnsError:
            return False
        if not all(link.up for name, link in links.items() if name != "lo"):
            return False
    recorded = state.processes_of(node.name)
    if not recorded or not all(p.alive() for p in recorded):
        return False
    if node.role == "network":
        return any(p.role == "proxy" for p in pidfile_processes(state, node))
    return True


# -- power ------------------------------------------------------------------------------


def power_off(state: DemoState, node: Node) -> tuple[int, list[int]]:
    """A power loss: every link of the node down (its qdhcp-/qrouter- ports included, else
    the kernel there would keep answering ARP for the addresses they held), then SIGKILL
    of each of its processes by PID. (links taken down, PIDs killed)."""
    links = node_links(state, node)
    set_links(links, up=False)
    victims = node_processes(state, node)
    for process in victims:
        process.kill()
    deadline = time.monotonic() + 5.0
    while any(p.alive() for p in victims) and time.monotonic() < deadline:
        time.sleep(0.02)
    survivors = [p.pid for p in victims if p.alive()]
    if survivors:
        raise DemoError(f"{node.name}: processes {survivors} survived SIGKILL")
    return len(links), [p.pid for p in victims]


def power_on(state: DemoState, node: Node) -> list[Process]:
    """Links up again, then the node's recorded processes started again in their order
    (the netagent brings back its proxy and dnsmasqs); waits until each serves."""
    set_links(node_links(state, node), up=True)
    started = []
    order = {role: index for index, role in enumerate((*SERVICES, "netagent"))}
    for process in sorted(state.processes_of(node.name), key=lambda p: order.get(p.role, 99)):
        if process.alive():
            continue
        started.append(restart(state, process))
    return started
