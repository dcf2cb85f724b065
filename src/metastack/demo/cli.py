"""`metastack demo up|status|down`: the whole system on this machine, for a first look."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from metastack.demo.errors import DemoUsageError
from metastack.demo.nodes import MAX_NODES, MGMT_NET
from metastack.demo.run import (
    DEFAULT_WORKDIR,
    DemoError,
    down,
    nodes_up,
    restart_netagent,
    services,
    start_node,
    status,
    stop_node,
    up,
)
from metastack.demo.state import DemoState
from metastack.errors import MetastackError

WORKDIR = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(os.environ.get("METASTACK_DEMO_DIR", str(DEFAULT_WORKDIR))),
    show_default=str(DEFAULT_WORKDIR),
    help="Where the demo keeps its state, configs, database and logs [METASTACK_DEMO_DIR].",
)


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _table(state: DemoState) -> str:
    rows: list[tuple[str, ...]] = [
        ("NAME", "UUID", "NETWORK", "IP", "PATH", "CLOUD-INIT", "NAMESPACE")
    ]
    for guest in state.guests:
        rows.append(
            (
                guest.name,
                guest.uuid,
                guest.network,
                guest.ip or "-",
                guest.path or "-",
                "ok" if guest.cloud_init_ok else "FAILED",
                guest.namespace,
            )
        )
    return _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _nodes_table(state: DemoState, up: dict[str, bool]) -> str:
    rows: list[tuple[str, ...]] = [
        ("NODE", "ROLE", "NAMESPACE", "ADDRESS", "STATE", "NETWORKS", "ROUTERS")
    ]
    for node in state.nodes:
        rows.append(
            (
                node.name,
                node.role,
                node.namespace or "(host)",
                node.address,
                "up" if up.get(node.name) else "DOWN",
                ",".join(n[:8] for n in node.networks) or "-",
                ",".join(r[:8] for r in node.routers) or "-",
            )
        )
    return _columns(rows)


def _env_hint(state: DemoState) -> str:
    guest = state.guests[0].namespace if state.guests else "<guest>"
    apis = [n for n in state.nodes if n.role == "api"]
    where = (
        f"control API {state.control_url} (a loopback relay to the API nodes' control APIs "
        f"on the management network {MGMT_NET}.0/24), metadata API "
        + ", ".join(f"http://{n.address}:8775" for n in apis)
        + " (inside the lab)"
        if state.multi_node
        else f"control API {state.control_url}, metadata API {state.metadata_url}"
    )
    return (
        f"{where}\n"
        f"  export METASTACK_URL={state.control_url} METASTACK_TOKEN=$(cat "
        f"{Path(state.workdir) / 'token'})\n"
        f"  metastack instance list\n"
        f"  ip netns exec {guest} "
        "curl -s http://169.254.169.254/openstack/latest/meta_data.json"
    )


@click.group("demo")
def demo_command() -> None:
    """Run metastack end to end on this machine (root; SQLite; guests are namespaces)."""


@demo_command.command("up")
@click.option("--instances", type=click.IntRange(1, 200), default=4, show_default=True)
@click.option(
    "--api-nodes",
    type=click.IntRange(1, MAX_NODES),
    default=1,
    show_default=True,
    help="API nodes, each a namespace running `metastack api` (more than one: --database "
    "PostgreSQL).",
)
@click.option(
    "--network-nodes",
    type=click.IntRange(1, MAX_NODES),
    default=1,
    show_default=True,
    help="Network nodes, each a namespace running agent, netagent, proxy and dnsmasq.",
)
@click.option(
    "--database",
    default="",
    help="Database URL (default SQLite); several API nodes need PostgreSQL through its unix "
    "socket: postgresql+psycopg://postgres@/DBNAME?host=/var/run/postgresql (created if "
    "missing, and then dropped by `down`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the guests as JSON on stdout.")
@click.option(
    "--control-port",
    type=int,
    default=8774,
    show_default=True,
    help="The control API's port on 127.0.0.1 (several nodes: the loopback relay's).",
)
@click.option("--metadata-port", type=int, default=8775, show_default=True)
@WORKDIR
def up_command(
    instances: int,
    api_nodes: int,
    network_nodes: int,
    database: str,
    as_json: bool,
    control_port: int,
    metadata_port: int,
    workdir: Path,
) -> None:
    """Start api, agent, proxy and netagent; boot INSTANCES guests by DHCP and cloud-init.

    With more than one API or network node, every node is a network namespace of its own
    on a management network; each tenant network is served by two network nodes, each
    router by one.
    """
    if os.geteuid() != 0:
        click.echo("metastack demo: needs root (namespaces, bridges, dnsmasq)", err=True)
        sys.exit(2)
    try:
        state = up(
            workdir,
            instances,
            _progress,
            control_port=control_port,
            metadata_port=metadata_port,
            api_nodes=api_nodes,
            network_nodes=network_nodes,
            database=database,
        )
    except DemoUsageError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(2)
    except (MetastackError, OSError) as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        click.echo(f"metastack demo: logs in {workdir}; `metastack demo down` removes it", err=True)
        sys.exit(1)
    (workdir / "token").write_text(state.admin_token + "\n")
    (workdir / "token").chmod(0o600)
    failed = [g for g in state.guests if not g.cloud_init_ok]
    if as_json:
        click.echo(json.dumps([g.report() for g in state.guests], indent=2))
    else:
        click.echo(_table(state))
        if state.multi_node:
            click.echo(_nodes_table(state, nodes_up(state)))
        click.echo(_env_hint(state))
    sys.exit(1 if failed else 0)


@demo_command.command("status")
@click.option(
    "--json", "as_json", is_flag=True, help="Print {guests, nodes} as one JSON object on stdout."
)
@WORKDIR
def status_command(as_json: bool, workdir: Path) -> None:
    """Show the demo's guests and nodes, and whether their services still run."""
    try:
        state = status(workdir)
    except DemoError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)
    nodes = nodes_up(state)
    if state.multi_node:
        alive = {p.role if not p.node else f"{p.node} {p.role}": p.alive() for p in state.processes}
    else:
        alive = {role: pid is not None for role, pid in services(state).items()}
    if as_json:
        document = {
            "guests": [g.report() for g in state.guests],
            "nodes": [node.report(nodes[node.name]) for node in state.nodes],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(f"phase: {state.phase}; run prefix {state.prefix}")
        click.echo(
            "services: " + ", ".join(f"{r} {'up' if a else 'DOWN'}" for r, a in alive.items())
        )
        click.echo(_table(state))
        if state.nodes:
            click.echo(_nodes_table(state, nodes))
    sys.exit(0 if state.phase == "up" and all(alive.values()) else 1)


@demo_command.command("down")
@WORKDIR
def down_command(workdir: Path) -> None:
    """Stop the demo's processes and remove its namespaces, bridges and files."""
    removed = down(workdir, _progress)
    if not removed and not workdir.exists():
        click.echo("metastack demo: nothing to remove", err=True)


@demo_command.command("stop-node")
@click.argument("name")
@WORKDIR
def stop_node_command(name: str, workdir: Path) -> None:
    """Power loss of node NAME (api-1, net-2, ...): every link of it down, its qdhcp-/qrouter-
    ports included, then its processes killed with SIGKILL."""
    try:
        stop_node(workdir, name, _progress)
    except MetastackError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)


@demo_command.command("start-node")
@click.argument("name")
@WORKDIR
def start_node_command(name: str, workdir: Path) -> None:
    """Bring node NAME back after stop-node: links up, its processes started again."""
    try:
        start_node(workdir, name, _progress)
    except MetastackError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)


@demo_command.command("restart")
@click.argument("service", type=click.Choice(["netagent"]))
@WORKDIR
def restart_command(service: str, workdir: Path) -> None:
    """Restart a demo service in place, on every network node (guests stay served)."""
    try:
        restart_netagent(workdir, _progress)
    except DemoError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)
