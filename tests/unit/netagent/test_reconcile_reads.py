"""What one reconcile pass asks the kernel: the fabric, which every guest's tap shares, once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from metastack.netagent.desired import Desired, NamespaceSpec, PortLink
from metastack.netagent.reconcile import Reconciler
from metastack.netns import apply as netns_apply
from metastack.netns import exec as netns_exec
from unit.netagent.builders import config

FABRIC = "ms-t-fabric"
ROUTER_NS = "ms-t-qrouter-r1"
GUEST_TAPS = 300


def _link(index: int, name: str, *, master: str | None, mtu: int = 1450) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ifindex": index,
        "ifname": name,
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": mtu,
        "address": f"fa:16:3e:00:{index // 256:02x}:{index % 256:02x}",
    }
    if master:
        entry["master"] = master
    return entry


class Kernel:
    """Answers the reads of a pass from fixed state and records every command."""

    def __init__(self, peer_master: str = "br-net1") -> None:
        self.commands: list[tuple[str, ...]] = []
        self.batches: list[tuple[tuple[str, ...], str]] = []
        self.fabric = [_link(1, "lo", master=None), _link(2, "br-net1", master=None)]
        self.fabric.append(_link(3, "qr-peer1", master=peer_master))
        self.fabric += [_link(10 + i, f"tap{i}", master="br-net1") for i in range(GUEST_TAPS)]
        inside = _link(2, "qr-1", master=None)
        inside["addr_info"] = [{"local": "10.0.0.1", "prefixlen": 24, "scope": "global"}]
        inside["linkinfo"] = {"info_kind": "veth"}
        self.router = [_link(1, "lo", master=None), inside]

    def run(
        self, argv: Sequence[str], *, input: str | None = None, **_: Any
    ) -> netns_exec.Completed:
        args = tuple(argv)
        self.commands.append(args)
        if input:
            self.batches.append((args, input))
        out = ""
        if args[:3] == ("ip", "-n", FABRIC) and "show" in args:
            out = json.dumps(self.fabric)
        elif args[:3] == ("ip", "-n", ROUTER_NS) and "route" in args:
            out = "[]"
        elif args[:3] == ("ip", "-n", ROUTER_NS) and "show" in args:
            out = json.dumps(self.router)
        return netns_exec.Completed(args, 0, out, "")

    def fabric_reads(self) -> list[tuple[str, ...]]:
        return [c for c in self.commands if c[:3] == ("ip", "-n", FABRIC) and "show" in c]

    def changes(self) -> list[tuple[str, ...]]:
        return [c for c in self.commands if "show" not in c]


class NoProxy:
    """A proxy that holds exactly what it is asked for (no listeners wanted here)."""

    def listeners(self) -> tuple[int, dict[str, Any]]:
        return 200, {"listeners": []}

    def replace(self, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        raise AssertionError(f"no listener change expected: {items}")


def _desired() -> Desired:
    link = PortLink("qr-1", "qr-peer1", "br-net1", "fa:16:3e:00:00:02", 1450, ("10.0.0.1/24",))
    return Desired(FABRIC, ("br-net1",), {ROUTER_NS: NamespaceSpec(ROUTER_NS, (link,))})


def _pass(kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Reconciler:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for name in (FABRIC, ROUTER_NS):
        (netns_dir / name).touch()
    monkeypatch.setattr(netns_apply, "NETNS_DIR", str(netns_dir))
    monkeypatch.setattr(netns_exec, "run", kernel.run)
    reconciler = Reconciler(config(state_path=str(tmp_path)), NoProxy())  # type: ignore[arg-type]
    report = reconciler.apply(_desired(), full=True)
    assert report.errors == []
    return reconciler


def test_a_full_pass_reads_the_fabric_once_without_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Kernel()
    _pass(kernel, tmp_path, monkeypatch)
    reads = kernel.fabric_reads()
    assert reads == [("ip", "-n", FABRIC, "-j", "link", "show")]
    assert kernel.changes() == []
    assert not any(c[:2] == ("ip", "netns") for c in kernel.commands)  # names from the folder


def test_a_peer_on_the_wrong_bridge_is_moved_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Kernel(peer_master="br-other")
    _pass(kernel, tmp_path, monkeypatch)
    fabric_batches = [text for args, text in kernel.batches if args[:3] == ("ip", "-n", FABRIC)]
    assert fabric_batches == ["link set qr-peer1 master br-net1\n"]
