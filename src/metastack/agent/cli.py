"""`metastack agent`: serve the metadata agent on its unix socket."""

from __future__ import annotations

import os
import sys

import click

from metastack.agent.config import load_agent_config
from metastack.errors import ConfigError
from metastack.tls import ca_file_problem


@click.command("agent")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--socket", "metadata_proxy_socket", help="Unix socket path the proxies connect to.")
@click.option(
    "--socket-mode",
    "metadata_proxy_socket_mode",
    type=click.Choice(["deduce", "user", "group", "all"]),
    help="Socket permissions: 0644 user, 0664 group, 0666 all.",
)
@click.option("--backlog", "metadata_backlog", type=int, help="Listen backlog of the socket.")
@click.option(
    "--endpoint",
    "metadata_endpoints",
    multiple=True,
    help="Metadata API base URL; repeat to spread over several. Overrides nova_metadata_host/port.",
)
@click.option("--nova-metadata-host", help="Metadata API host.")
@click.option("--nova-metadata-port", type=int, help="Metadata API port.")
@click.option(
    "--control-url",
    multiple=True,
    help="Control API base URL (lookups and change feed); repeat for several.",
)
@click.option("--upstream-timeout", type=float, help="Seconds before a request is answered 503.")
@click.option("--cache-expiration", type=float, help="Lookup cache TTL in seconds; 0 = off.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Overrides [agent] log_level.",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), help="text or json lines.")
@click.option("--metrics-listen", help="HOST:PORT of /metrics, /healthz, /readyz.")
@click.option("--check", is_flag=True, help="Validate the config (file, env, flags) and exit.")
def agent_command(config_path: str | None, check: bool, **flags: object) -> None:
    """Serve the metadata agent: proxies in, signed requests to the metadata API out.

    The shared secret and the admin token are read from the config file or from
    METASTACK_AGENT_METADATA_PROXY_SHARED_SECRET / METASTACK_AGENT_ADMIN_TOKEN (or
    admin_token_file), never flags
    (a flag shows in every process listing).
    """
    # Unset flags (None, or an empty tuple for the repeatable one) leave file and env alone.
    overrides = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in flags.items()
        if value not in (None, ())
    }
    if isinstance(overrides.get("log_level"), str):
        overrides["log_level"] = str(overrides["log_level"]).lower()
    try:
        config = load_agent_config(config_path, os.environ, overrides)
    except ConfigError as exc:
        click.echo(f"metastack agent: {exc}", err=True)
        sys.exit(2)
    problem = ca_file_problem("agent.control_ca_file", config.control_ca_file)
    if problem is not None:
        click.echo(f"metastack agent: {problem}", err=True)
        sys.exit(2)
    if check:
        click.echo(f"metastack agent: {config_path or 'defaults'}: OK")
        sys.exit(0)
    from metastack.agent.server import run

    sys.exit(run(config))
