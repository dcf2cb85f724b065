"""The single subprocess chokepoint for `ip`, `iptables` and friends."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from metastack.errors import MetastackError

log = logging.getLogger(__name__)


class NetnsError(MetastackError):
    """A kernel networking command failed, or a namespace could not be entered."""


@dataclass(frozen=True, slots=True)
class Completed:
    """Outcome of one command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
) -> Completed:
    """Run one command without a shell; raise NetnsError on failure when `check`."""
    args = tuple(argv)
    log.debug("exec %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{args[0]}: {exc}") from exc
    done = Completed(args, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return done
