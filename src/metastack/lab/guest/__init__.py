"""Scripts run inside a guest namespace by the guest's own Python; they never import metastack."""

from __future__ import annotations

from pathlib import Path

GUEST_PYTHON = "/usr/bin/python3"


def script(name: str) -> Path:
    """The path of a guest-side script of this folder, e.g. `script("cloudinit_probe")`."""
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():
        raise FileNotFoundError(f"no guest script {name!r} in {path.parent}")
    return path


__all__ = ["GUEST_PYTHON", "script"]
