"""Netagents sharing one fabric: a bridge another made since this pass looked is no error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from metastack.netagent.desired import Desired
from metastack.netagent.reconcile import Reconciler
from metastack.netns import apply as netns_apply
from metastack.netns import exec as netns_exec
from unit.netagent.builders import config
from unit.netagent.test_reconcile_reads import NoProxy

FABRIC = "ms-t-fabric"
LO = {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536, "address": ""}
BRIDGE = {"ifindex": 2, "ifname": "br-net1", "flags": ["UP"], "mtu": 1500, "address": "x"}


class Racing:
    """A kernel where another node makes `br-net1` just after this pass read the fabric."""

    def __init__(self, other_node_wins: int) -> None:
        self.links: list[dict[str, Any]] = [LO]
        self.races = other_node_wins  # how many of our bridge creations the other node beats
        self.reads = 0
        self.batches: list[str] = []

    def run(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True, **_: Any
    ) -> netns_exec.Completed:
        args = tuple(argv)
        if args[:3] == ("ip", "-n", FABRIC) and "show" in args:
            self.reads += 1
            return netns_exec.Completed(args, 0, json.dumps(self.links), "")
        self.batches.append(input or "")
        if input and "link add br-net1 type bridge" in input and self.races:
            self.races -= 1
            self.links = [LO, BRIDGE]  # the other node's, made meanwhile
            if check:
                raise netns_exec.NetnsError("ip -n ms-t-fabric -batch - exited 2: File exists")
        return netns_exec.Completed(args, 0, "", "")


def _apply(kernel: Racing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    (netns_dir / FABRIC).touch()
    monkeypatch.setattr(netns_apply, "NETNS_DIR", str(netns_dir))
    monkeypatch.setattr(netns_exec, "run", kernel.run)
    reconciler = Reconciler(config(state_path=str(tmp_path)), NoProxy())  # type: ignore[arg-type]
    return reconciler.apply(Desired(FABRIC, ("br-net1",)), full=True).errors


def test_a_bridge_made_by_another_node_meanwhile_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Racing(other_node_wins=1)
    assert _apply(kernel, tmp_path, monkeypatch) == []
    assert kernel.reads == 2
    # the other node's bridge is up already: nothing more to do in the second look
    assert kernel.batches == ["link add br-net1 type bridge\n"]


def test_a_fabric_that_fails_twice_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Racing(other_node_wins=2)
    kernel.links = [LO]

    def never_appears(*args: Any, **kwargs: Any) -> netns_exec.Completed:
        try:
            return Racing.run(kernel, *args, **kwargs)
        finally:
            kernel.links = [LO]  # e.g. the name is taken by a link this read does not show

    monkeypatch.setattr(kernel, "run", never_appears)
    errors = _apply(kernel, tmp_path, monkeypatch)
    assert len(errors) == 1 and "File exists" in errors[0]
