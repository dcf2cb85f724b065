"""Every key of every service section, its default and its meaning, from the settings models.

`metastack config sample` prints it as an annotated TOML file (which loads back as a valid
config: fixed defaults as keys, the rest commented out) or, with `--format markdown`, as
the README's configuration tables; a test keeps the README equal to that output.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from metastack.agent.config import AgentConfig
from metastack.config import ApiConfig
from metastack.netagent.config import NetagentConfig
from metastack.proxy.config import ProxyConfig

SERVICES: tuple[tuple[str, type[BaseModel]], ...] = (
    ("api", ApiConfig),
    ("agent", AgentConfig),
    ("proxy", ProxyConfig),
    ("netagent", NetagentConfig),
)
WIDTH = 90
TOML_HEADER = """\
# metastack configuration: every key of every service, its default and its meaning
# (`metastack config sample`). One table per service; METASTACK_<SECTION>_<KEY>
# environment variables override single keys (lists and tables as JSON, everything else
# as the raw text), command-line flags override both. Commented-out keys have no fixed
# default. Check a file with `metastack <service> --config FILE --check`.
"""


@dataclass(frozen=True)
class Key:
    """One option: its name, default (or the words for a computed one) and meaning."""

    name: str
    default: Any
    default_text: str | None
    example: Any
    description: str
    octal: bool

    @property
    def fixed(self) -> bool:
        """True when the default is a value a TOML file can hold."""
        return self.default_text is None and self.default is not None


@dataclass(frozen=True)
class Section:
    """A TOML table (`[api]`, `[api.vendordata]`) or array of tables (`[[proxy.listeners]]`)."""

    name: str
    model: type[BaseModel]
    array: bool = False
    description: str | None = None  # of the field holding a sub-table, else the docstring's

    @property
    def doc(self) -> str:
        return self.description or (self.model.__doc__ or "").strip().split("\n")[0]

    @property
    def header(self) -> str:
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"

    def options(self) -> list[Key]:
        return [
            _key(name, info)
            for name, info in self.model.model_fields.items()
            if _table_model(info.annotation) is None
        ]


def sections() -> list[Section]:
    """Every section, each service's table followed by its sub-tables."""
    found: list[Section] = []
    for name, model in SERVICES:
        found += _walk(Section(name, model))
    return found


def _walk(section: Section) -> Iterator[Section]:
    yield section
    for name, info in section.model.model_fields.items():
        nested = _table_model(info.annotation)
        if nested is not None:
            array = get_origin(info.annotation) is list
            doc = info.description if array else None
            yield from _walk(Section(f"{section.name}.{name}", nested, array, doc))


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that is a table or a list of tables, else None."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _key(name: str, info: FieldInfo) -> Key:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    default_text = extra.get("default_text")
    if info.default is not PydanticUndefined:
        default = info.default
    elif default_text is None and info.default_factory is not None:
        default = info.default_factory()  # type: ignore[call-arg]
    else:
        default = None
    if not info.description:
        raise ValueError(f"{name} has no description")
    return Key(
        name,
        default,
        None if default_text is None else str(default_text),
        extra.get("example", ""),
        info.description,
        bool(extra.get("octal")),
    )


def toml_value(value: Any, *, octal: bool = False) -> str:
    """A value as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0o{value:o}" if octal else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def selected(section: str | None) -> list[Section]:
    """All sections, or one and its sub-tables."""
    return [
        s
        for s in sections()
        if section is None or s.name == section or s.name.startswith(section + ".")
    ]


def sample_toml(section: str | None = None) -> str:
    """An annotated TOML file with every key; it loads back as a valid config."""
    parts = [TOML_HEADER]
    for table in selected(section):
        parts.append(_toml_section(table))
    return "\n".join(parts)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent="# ", subsequent_indent="# ")


def _toml_section(section: Section) -> str:
    # An array of tables is an example, commented out: by default there is no table at all.
    prefix = "# " if section.array else ""
    lines = [f"{prefix}{section.header}", *_comment(section.doc)]
    for key in section.options():
        lines.append("")
        lines += _comment(key.description)
        if key.fixed:
            lines.append(f"{prefix}{key.name} = {toml_value(key.default, octal=key.octal)}")
            continue
        lines += _comment(f"Default: {key.default_text or 'none'}.")
        lines.append(f"# {key.name} = {toml_value(key.example)}")
    return "\n".join(lines) + "\n"


def markdown_tables(section: str | None = None) -> str:
    """The README's tables: a `key | default | meaning` table per section."""
    blocks = []
    for table in selected(section):
        rows = [f"`{table.header}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for key in table.options():
            rows.append(f"| `{key.name}` | {_markdown_default(key)} | {_cell(key.description)} |")
        blocks.append("\n".join(rows) + "\n")
    return "\n".join(blocks)


def _markdown_default(key: Key) -> str:
    if key.default_text is not None:
        return key.default_text
    if key.default is None:
        return "none"
    return f"`{toml_value(key.default, octal=key.octal)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
