"""Which metastack a benchmark measured: the package's folder, its commit and edited files."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import metastack


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    return done.stdout.rstrip("\n") if done.returncode == 0 else ""


def source_state() -> dict[str, Any]:
    """The package folder; when it is a checkout's src/metastack, that checkout's commit and
    its uncommitted files under src/ (a measurement of edited code says so)."""
    package = Path(metastack.__file__).resolve().parent
    state: dict[str, Any] = {"package": str(package), "commit": ""}
    top = _git(package, "rev-parse", "--show-toplevel")
    if top and Path(top).resolve() / "src" / "metastack" == package:
        state["commit"] = _git(package, "rev-parse", "HEAD")
        dirty = _git(package, "status", "--porcelain", "--", str(package.parent))
        state["uncommitted_src"] = [line[3:] for line in dirty.splitlines()]
    return state
