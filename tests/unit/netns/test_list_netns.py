"""Namespace names come from iproute2's folder of named namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from metastack.netns import apply as netns_apply


def test_names_are_the_folder_entries_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ms-b-qdhcp-2", "ms-a-fabric", "ms-b-qrouter-1"):
        (tmp_path / name).touch()
    monkeypatch.setattr(netns_apply, "NETNS_DIR", str(tmp_path))
    assert netns_apply.list_netns() == ["ms-a-fabric", "ms-b-qdhcp-2", "ms-b-qrouter-1"]


def test_no_folder_means_no_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns_apply, "NETNS_DIR", str(tmp_path / "absent"))
    assert netns_apply.list_netns() == []
