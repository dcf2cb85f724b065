"""The `metastack` command: one console script, a subcommand per service and resource."""

from __future__ import annotations

import importlib

import click

from metastack import __version__

# (module, attribute) of each subcommand; each lives beside the service it starts.
SUBCOMMANDS = (
    ("metastack.api.cli", "api_command"),
    ("metastack.store.cli", "db_command"),
    ("metastack.demo.cli", "demo_command"),
    ("metastack.agent.cli", "agent_command"),
    ("metastack.proxy.cli", "proxy_command"),
    ("metastack.netagent.cli", "netagent_command"),
    ("metastack.bench.cli", "bench_command"),
)
# Modules exposing register(main) for a family of resource commands.
REGISTRARS = ("metastack.client.cli",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metastack")
def main() -> None:
    """metastack: instance metadata for clouds and VM platforms."""


def _import_optional(name: str) -> object | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None  # that service is not part of this build yet
        raise


def _register() -> None:
    for module_name, attribute in SUBCOMMANDS:
        module = _import_optional(module_name)
        if module is not None:
            main.add_command(getattr(module, attribute))
    for module_name in REGISTRARS:
        module = _import_optional(module_name)
        if module is not None:
            module.register(main)  # type: ignore[attr-defined]


_register()
