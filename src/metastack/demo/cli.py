"""`metastack demo up|status|down`: the whole system on this machine, for a first look."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from metastack.demo.run import (
    DEFAULT_WORKDIR,
    DemoError,
    down,
    restart_netagent,
    services,
    status,
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
    rows = [("NAME", "UUID", "NETWORK", "IP", "PATH", "CLOUD-INIT", "NAMESPACE")]
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _env_hint(state: DemoState) -> str:
    return (
        f"control API {state.control_url}, metadata API {state.metadata_url}\n"
        f"  export METASTACK_URL={state.control_url} METASTACK_TOKEN=$(cat "
        f"{Path(state.workdir) / 'token'})\n"
        f"  metastack instance list\n"
        f"  ip netns exec {state.guests[0].namespace if state.guests else '<guest>'} "
        "curl -s http://169.254.169.254/openstack/latest/meta_data.json"
    )


@click.group("demo")
def demo_command() -> None:
    """Run metastack end to end on this machine (root; SQLite; guests are namespaces)."""


@demo_command.command("up")
@click.option("--instances", type=click.IntRange(1, 200), default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the guests as JSON on stdout.")
@click.option("--control-port", type=int, default=8774, show_default=True)
@click.option("--metadata-port", type=int, default=8775, show_default=True)
@WORKDIR
def up_command(
    instances: int, as_json: bool, control_port: int, metadata_port: int, workdir: Path
) -> None:
    """Start api, agent, proxy and netagent; boot INSTANCES guests by DHCP and cloud-init."""
    if os.geteuid() != 0:
        click.echo("metastack demo: needs root (namespaces, bridges, dnsmasq)", err=True)
        sys.exit(2)
    try:
        state = up(
            workdir, instances, _progress, control_port=control_port, metadata_port=metadata_port
        )
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
        click.echo(_env_hint(state))
    sys.exit(1 if failed else 0)


@demo_command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the guests as JSON on stdout.")
@WORKDIR
def status_command(as_json: bool, workdir: Path) -> None:
    """Show the demo's guests and whether its services still run."""
    try:
        state = status(workdir)
    except DemoError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)
    alive = {role: pid is not None for role, pid in services(state).items()}
    if as_json:
        click.echo(json.dumps([g.report() for g in state.guests], indent=2))
    else:
        click.echo(f"phase: {state.phase}; run prefix {state.prefix}")
        click.echo(
            "services: " + ", ".join(f"{r} {'up' if a else 'DOWN'}" for r, a in alive.items())
        )
        click.echo(_table(state))
    sys.exit(0 if state.phase == "up" and all(alive.values()) else 1)


@demo_command.command("down")
@WORKDIR
def down_command(workdir: Path) -> None:
    """Stop the demo's processes and remove its namespaces, bridges and files."""
    removed = down(workdir, _progress)
    if not removed and not workdir.exists():
        click.echo("metastack demo: nothing to remove", err=True)


@demo_command.command("restart")
@click.argument("service", type=click.Choice(["netagent"]))
@WORKDIR
def restart_command(service: str, workdir: Path) -> None:
    """Restart a demo service in place (guests stay served)."""
    try:
        restart_netagent(workdir, _progress)
    except DemoError as exc:
        click.echo(f"metastack demo: {exc}", err=True)
        sys.exit(1)
