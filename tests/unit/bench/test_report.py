"""The storm report's text."""

from __future__ import annotations

from metastack.bench.cli import _counters


def test_tcp_counters_line_names_what_stayed_at_zero() -> None:
    assert _counters({"ListenDrops": 0, "TCPSynRetrans": 0}) == "ListenDrops, TCPSynRetrans all 0"
    assert _counters({"ListenDrops": 3, "TCPSynRetrans": 0}) == "ListenDrops 3"
