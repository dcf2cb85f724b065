"""Why a root test tier cannot run on this machine: one check for every tier."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from metastack.lab.guest import GUEST_PYTHON


def missing(what: str, tools: Sequence[str], *, cloud_init: bool = True) -> str | None:
    """The reason `what` cannot run here (root, each of `tools`, Debian's cloud-init in
    the guests), or None. Tools are looked up on PATH and in /usr/sbin."""
    if os.geteuid() != 0:
        return f"{what} needs root (network namespaces)"
    for tool in tools:
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{what} needs {tool}"
    if cloud_init and not (Path("/usr/bin/cloud-init").exists() and Path(GUEST_PYTHON).exists()):
        return f"{what} needs Debian's cloud-init (/usr/bin/cloud-init, {GUEST_PYTHON})"
    return None
