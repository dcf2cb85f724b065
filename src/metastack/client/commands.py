"""Plumbing shared by the resource commands: connection options, async runner, name lookup."""

from __future__ import annotations

import asyncio
import functools
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click

from metastack.client.http import DEFAULT_URL, ControlApiError, ControlClient
from metastack.client.output import Column, print_list, print_object
from metastack.tls import TlsFileError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Cli:
    """What a command body gets: the client and how to print."""

    client: ControlClient
    as_json: bool

    def show(self, obj: dict[str, Any]) -> None:
        """Print one object."""
        print_object(obj, self.as_json)

    def table(self, items: list[Any], columns: list[Column]) -> None:
        """Print a list of objects."""
        print_list(items, columns, self.as_json)

    async def resolve(self, plural: str, value: str) -> str:
        """An id for `value`: itself if it looks like a uuid, else the one object so named."""
        if _UUID.match(value):
            return value
        matches = await self.client.list(plural, name=value)
        if len(matches) == 1:
            return str(matches[0].get("id") or matches[0]["uuid"])
        singular = plural.removesuffix("s")
        if not matches:
            raise ControlApiError(404, f"no {singular} named {value!r}")
        raise ControlApiError(409, f"{len(matches)} {plural} are named {value!r}; use an id")


Body = Callable[..., Awaitable[None]]


def api_command(group: click.Group, name: str, help_text: str) -> Callable[[Body], click.Command]:
    """Register an async command body on `group` with --url, --token, --ca-file and --json
    options."""

    def decorate(body: Body) -> click.Command:
        @functools.wraps(body)
        def run(
            url: str, token: str | None, ca_file: str | None, as_json: bool, **kwargs: Any
        ) -> None:
            async def main() -> None:
                async with ControlClient(url, token, ca_file=ca_file) as client:
                    await body(Cli(client, as_json), **kwargs)

            try:
                asyncio.run(main())
            except TlsFileError as exc:
                click.echo(f"metastack: --ca-file: {exc}", err=True)
                sys.exit(2)
            except ControlApiError as exc:
                click.echo(f"metastack: {exc}", err=True)
                sys.exit(1)

        run = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(run)
        run = click.option(
            "--ca-file",
            envvar="METASTACK_CA_FILE",
            default=None,
            help="PEM CA bundle for an https control API URL [METASTACK_CA_FILE].",
        )(run)
        run = click.option(
            "--token", envvar="METASTACK_TOKEN", default=None, help="Admin token [METASTACK_TOKEN]."
        )(run)
        run = click.option(
            "--url",
            envvar="METASTACK_URL",
            default=DEFAULT_URL,
            show_default=True,
            help="Control API URL [METASTACK_URL].",
        )(run)
        return group.command(name, help=help_text)(run)

    return decorate


def key_values(option: str, pairs: tuple[str, ...]) -> dict[str, str]:
    """`k=v` arguments as a dict, in order; BadParameter naming the option otherwise."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=option)
        result[key] = value
    return result


def host_route(text: str) -> dict[str, str]:
    """`destination=CIDR,nexthop=IP` (or `dest=`) as a host route."""
    parts = key_values("--host-route", tuple(text.split(",")))
    destination = parts.get("destination", parts.get("dest"))
    if destination is None or "nexthop" not in parts:
        raise click.BadParameter(
            f"{text!r}: need destination=CIDR,nexthop=IP", param_hint="--host-route"
        )
    return {"destination": destination, "nexthop": parts["nexthop"]}


def without_none(**fields: Any) -> dict[str, Any]:
    """The fields that were given (None means not given)."""
    return {key: value for key, value in fields.items() if value is not None}
