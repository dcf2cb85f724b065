"""The one logging setup: JSON lines with structured fields, text lines that cannot be forged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from metastack.logs import AccessLog, setup_logging

FIELDS = {
    "instance_id": "i-1",
    "project_id": "p",
    "network_id": "n",
    "router_id": None,
    "remote_addr": "10.0.0.5",
    "method": "GET",
    "path": "/latest/meta-data/",
    "status": 200,
    "duration_ms": 1.25,
}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    setup_logging("warning", "text")  # leave the root logger as plain as we found it


def test_json_lines_carry_fields_as_keys(stream: io.StringIO) -> None:
    setup_logging("info", "json", stream)
    AccessLog().write(FIELDS)
    logging.getLogger("metastack.test").warning("hello %s", "world")
    access, other = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {key: access[key] for key in FIELDS} == FIELDS
    assert access["logger"] == "metastack.access" and access["level"] == "info"
    assert access["ts"].endswith("Z")
    assert other["message"] == "hello world" and other["level"] == "warning"


def test_text_lines_quote_what_could_break_them(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    AccessLog().write({**FIELDS, "path": '/x y"\nstatus=500'})
    (line,) = stream.getvalue().splitlines()
    assert "metastack.access: request instance_id=i-1 " in line
    assert 'path="/x y\\"\\nstatus=500" status=200 duration_ms=1.25' in line
    assert "router_id=- " in line


def test_access_log_off_or_below_level(stream: io.StringIO) -> None:
    setup_logging("warning", "json", stream)
    assert not AccessLog().enabled
    setup_logging("info", "json", stream)
    assert not AccessLog(enabled=False).enabled
    assert AccessLog().enabled


def test_exceptions_stay_in_one_json_line(stream: io.StringIO) -> None:
    setup_logging("info", "json", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("metastack.test").exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]
