"""The `metastack` command: one console script, a subcommand per service and resource.

Subcommands are imported only when invoked, so `metastack agent` or `metastack proxy`
load just their own service (no HTTP framework of the API, no CLI client).
"""

from __future__ import annotations

import importlib

import click

from metastack import __version__

# Command name -> "module:attribute" of its click command; each lives beside its service.
COMMANDS = {
    "api": "metastack.api.cli:api_command",
    "agent": "metastack.agent.cli:agent_command",
    "proxy": "metastack.proxy.cli:proxy_command",
    "netagent": "metastack.netagent.cli:netagent_command",
    "db": "metastack.store.cli:db_command",
    "demo": "metastack.demo.cli:demo_command",
    "bench": "metastack.bench.cli:bench_command",
    "config": "metastack.config_cli:config_command",
    "project": "metastack.client.cli:project",
    "network": "metastack.client.cli:network",
    "subnet": "metastack.client.cli:subnet",
    "router": "metastack.client.cli:router",
    "port": "metastack.client.cli:port",
    "instance": "metastack.client.cli:instance",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metastack")
def main() -> None:
    """metastack: instance metadata for clouds and VM platforms."""
