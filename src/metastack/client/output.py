"""Printing for the CLI: openstack-style tables by default, JSON with --json."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def _cell(value: Any) -> str:
    """A value for a table cell: lists one item per line, mappings as key=value lines."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_cell(item) if isinstance(item, str) else _json(item) for item in value)
    if isinstance(value, dict):
        return "\n".join(f"{key}={_cell(item)}" for key, item in value.items())
    return _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An ASCII table like the openstack client's; multi-line cells are kept."""
    split = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [len(name) for name in header]
    for row in split:
        for index, lines in enumerate(row):
            widths[index] = max(widths[index], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [rule, line(header), rule]
    for row in split:
        for depth in range(max(len(lines) for lines in row)):
            out.append(line([lines[depth] if depth < len(lines) else "" for lines in row]))
    out.append(rule)
    return "\n".join(out)


def print_object(obj: Mapping[str, Any], as_json: bool) -> None:
    """One object: a Field/Value table, or its JSON."""
    if as_json:
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False))
        return
    rows = [[key, _cell(value)] for key, value in sorted(obj.items())]
    click.echo(render_table(["Field", "Value"], rows))


def print_list(
    items: Sequence[Mapping[str, Any]], columns: Sequence[Column], as_json: bool
) -> None:
    """Several objects: a table with `columns`, or the JSON list."""
    if as_json:
        click.echo(json.dumps(list(items), indent=2, ensure_ascii=False))
        return
    rows = [[_cell(get(item)) for _, get in columns] for item in items]
    click.echo(render_table([name for name, _ in columns], rows))


def field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A column getter for one field."""
    return lambda item: item.get(name)


def fixed_ips(item: Mapping[str, Any]) -> str:
    """The port's addresses, one per line."""
    return "\n".join(ip["ip_address"] for ip in item.get("fixed_ips", []))
