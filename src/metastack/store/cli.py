"""`metastack db`: create or upgrade the schema, show its revision."""

from __future__ import annotations

import os
import sys

import click

from metastack.config import load_api_config
from metastack.errors import MetastackError


def _database_url(config_path: str | None, database_url: str | None) -> str:
    try:
        return load_api_config(config_path, os.environ, {"database_url": database_url}).database_url
    except MetastackError as exc:
        click.echo(f"metastack db: {exc}", err=True)
        sys.exit(2)


@click.group("db")
def db_command() -> None:
    """Manage the store's schema (the API also upgrades it at start)."""


@db_command.command("upgrade")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--database-url", default=None, help="Overrides [api] database_url.")
def upgrade_command(config_path: str | None, database_url: str | None) -> None:
    """Create the schema or bring it to the newest migration."""
    from metastack.store.migrate import current, upgrade

    url = _database_url(config_path, database_url)
    try:
        upgrade(url)
        click.echo(f"schema at revision {current(url)}")
    except MetastackError as exc:
        click.echo(f"metastack db: {exc}", err=True)
        sys.exit(1)


@db_command.command("current")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--database-url", default=None, help="Overrides [api] database_url.")
def current_command(config_path: str | None, database_url: str | None) -> None:
    """Print the schema revision (or `none` for an empty database)."""
    from metastack.store.migrate import current

    try:
        click.echo(current(_database_url(config_path, database_url)) or "none")
    except MetastackError as exc:
        click.echo(f"metastack db: {exc}", err=True)
        sys.exit(1)
