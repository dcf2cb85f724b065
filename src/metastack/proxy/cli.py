"""`metastack proxy`: serve metadata listeners inside network namespaces."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from metastack.config import parse_hostport
from metastack.errors import ConfigError
from metastack.proxy.config import ListenerConfig, load_proxy_config, parse_listener


def _per_namespace_listeners(
    netns: str | None,
    network_id: str | None,
    router_id: str | None,
    binds: tuple[str, ...],
    interface: str | None,
) -> list[ListenerConfig]:
    default = "169.254.169.254:80" if network_id else "0.0.0.0:9697"
    specs = []
    for bind in binds or (default,):
        host, port = parse_hostport(bind)
        specs.append(
            ListenerConfig(
                netns=netns,
                host=host,
                port=port,
                network_id=network_id,
                router_id=router_id,
                interface=interface if ":" in host else None,
            )
        )
    return specs


@click.command("proxy")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--agent-socket", default=None, help="The agent's unix socket path.")
@click.option(
    "--control-socket", default=None, help="Control API unix socket path ('' disables it)."
)
@click.option(
    "--listener",
    "listener_texts",
    multiple=True,
    help="Startup listener: netns=NS,bind=HOST:PORT,network=ID|router=ID[,interface=DEV].",
)
@click.option("--netns", default=None, help="Per-namespace mode: the namespace to listen in.")
@click.option("--network-id", default=None, help="Per-namespace mode: stamp this network id.")
@click.option("--router-id", default=None, help="Per-namespace mode: stamp this router id.")
@click.option("--bind", "binds", multiple=True, help="Per-namespace mode: HOST:PORT (repeatable).")
@click.option("--interface", default=None, help="Scope device of an IPv6 link-local bind.")
@click.option("--upstream-timeout", type=float, default=None, help="Seconds before a 504.")
@click.option("--event-loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default=None)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.option("--metrics-listen", default=None, help="HOST:PORT of /metrics, /healthz, /readyz.")
@click.option("--check", is_flag=True, help="Validate the config (file, env, flags) and exit.")
def proxy_command(
    config_path: str | None,
    agent_socket: str | None,
    control_socket: str | None,
    listener_texts: tuple[str, ...],
    netns: str | None,
    network_id: str | None,
    router_id: str | None,
    binds: tuple[str, ...],
    interface: str | None,
    upstream_timeout: float | None,
    event_loop: str | None,
    log_level: str | None,
    log_format: str | None,
    metrics_listen: str | None,
    check: bool,
) -> None:
    """Serve 169.254.169.254 inside namespaces, forwarding to the metadata agent.

    Without --network-id/--router-id, one process serves every listener given by
    --listener, the config file and the control socket. With one of them, it serves that
    identity only (upstream's process-per-namespace model) and no control socket unless
    --control-socket is given.
    """
    overrides: dict[str, Any] = {
        "metadata_proxy_socket": agent_socket,
        "control_socket": control_socket,
        "upstream_timeout": upstream_timeout,
        "event_loop": event_loop,
        "log_level": log_level,
        "log_format": log_format,
        "metrics_listen": metrics_listen,
    }
    try:
        specs = [parse_listener(text) for text in listener_texts]
        if network_id or router_id:
            specs += _per_namespace_listeners(netns, network_id, router_id, binds, interface)
            if control_socket is None:
                overrides["control_socket"] = ""
        elif netns or binds or interface:
            raise ValueError("--netns/--bind/--interface need --network-id or --router-id")
        config = load_proxy_config(config_path, os.environ, overrides)
        if specs:
            config = config.model_copy(update={"listeners": [*config.listeners, *specs]})
    except (ConfigError, ValueError) as exc:
        click.echo(f"metastack proxy: {exc}", err=True)
        sys.exit(2)
    if check:
        click.echo(f"metastack proxy: {config_path or 'defaults'}: OK")
        sys.exit(0)
    from metastack.proxy.serve import run

    sys.exit(run(config))
