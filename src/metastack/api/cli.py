"""`metastack api`: serve the control API and/or the metadata API."""

from __future__ import annotations

import os
import sys

import click

from metastack.config import load_api_config
from metastack.errors import ConfigError


@click.command("api")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--database-url", default=None, help="Overrides [api] database_url.")
@click.option("--control-listen", default=None, help="host:port of the control API.")
@click.option("--metadata-listen", default=None, help="host:port of the metadata API.")
@click.option("--workers", type=int, default=None, help="Worker processes.")
@click.option("--metrics-listen", default=None, help="HOST:PORT of /metrics, /healthz, /readyz.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["text", "json"]))
@click.option("--check", is_flag=True, help="Validate the config (file, env, flags) and exit.")
def api_command(
    config_path: str | None,
    database_url: str | None,
    control_listen: str | None,
    metadata_listen: str | None,
    workers: int | None,
    metrics_listen: str | None,
    log_level: str | None,
    log_format: str | None,
    check: bool,
) -> None:
    """Serve the control API (8774) and the metadata API (8775).

    The shared secret and the admin token are read from the config file (admin_token_file)
    or the environment, never flags (a flag shows in every process listing).
    """
    overrides = {
        "database_url": database_url,
        "control_listen": control_listen,
        "metadata_listen": metadata_listen,
        "workers": workers,
        "metrics_listen": metrics_listen,
        "log_level": log_level,
        "log_format": log_format,
    }
    try:
        config = load_api_config(config_path, os.environ, overrides)
    except ConfigError as exc:
        click.echo(f"metastack api: {exc}", err=True)
        sys.exit(2)
    from metastack.api.server import run, startup_problem

    if check:
        problem = startup_problem(config)
        if problem is not None:
            click.echo(f"metastack api: {problem}", err=True)
            sys.exit(2)
        click.echo(f"metastack api: {config_path or 'defaults'}: OK")
        sys.exit(0)
    sys.exit(run(config))
