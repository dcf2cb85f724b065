"""`metastack config sample`: an annotated config file, or the README's tables."""

from __future__ import annotations

import click

from metastack.config_doc import markdown_tables, sample_toml, sections


@click.group("config")
def config_command() -> None:
    """Configuration files: every key, its default and its meaning."""


@config_command.command("sample")
@click.option(
    "--section",
    type=click.Choice([s.name for s in sections()]),
    help="Only this section (and its sub-tables).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["toml", "markdown"]),
    default="toml",
    show_default=True,
    help="An annotated TOML file, or the README's Markdown tables.",
)
def sample_command(section: str | None, output_format: str) -> None:
    """Print every key of every service section with its default and meaning."""
    render = markdown_tables if output_format == "markdown" else sample_toml
    click.echo(render(section), nl=False)
