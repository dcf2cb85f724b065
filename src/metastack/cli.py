"""The `metastack` command: one console script, a subcommand per service and resource."""

from __future__ import annotations

import click

from metastack import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metastack")
def main() -> None:
    """metastack: instance metadata for clouds and VM platforms."""


def _register() -> None:
    """Attach the subcommands that live beside their services."""
    from metastack.api.cli import api_command

    main.add_command(api_command)
    try:
        from metastack.client.cli import register as register_client
    except ImportError:  # pragma: no cover - during bootstrap only
        return
    register_client(main)


_register()
