"""What a demo created, written down as it goes, so `status` and `down` find every piece."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "demo.json"


@dataclass
class Process:
    """A service the demo started: its PID and the config path that identifies it."""

    role: str
    pid: int
    marker: str  # a string of its command line (its config path): guards against PID reuse

    def alive(self) -> bool:
        """True while this PID still runs the command the demo started."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.marker.encode() in cmdline

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL of its process group after `timeout` (API workers go too)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class Guest:
    """One guest namespace and what it learnt."""

    name: str
    uuid: str
    namespace: str
    network_id: str
    network: str
    project_id: str
    mac: str
    ip: str = ""
    path: str = ""
    cloud_init_ok: bool = False
    hostname: str = ""
    error: str = ""
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        """The pinned JSON keys of `demo up --json` / `demo status --json`, plus extras."""
        return {
            "name": self.name,
            "uuid": self.uuid,
            "namespace": self.namespace,
            "network_id": self.network_id,
            "ip": self.ip,
            "path": self.path,
            "cloud_init_ok": self.cloud_init_ok,
            "network": self.network,
            "project_id": self.project_id,
            "mac": self.mac,
            "hostname": self.hostname,
            "error": self.error,
            "seconds": self.seconds,
        }


@dataclass
class DemoState:
    """Everything `down` must remove; saved after every step of `up`."""

    workdir: str
    run_id: str
    prefix: str
    control_url: str = ""
    metadata_url: str = ""
    admin_token: str = ""
    processes: list[Process] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    guests: list[Guest] = field(default_factory=list)
    phase: str = "starting"
    made_etc_netns: bool = False  # /etc/netns did not exist before this demo

    @property
    def path(self) -> Path:
        return Path(self.workdir) / STATE_FILE

    def save(self) -> None:
        """Write atomically: a crash never leaves half a record of what exists."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, workdir: Path) -> DemoState | None:
        """The saved state of the demo in `workdir`, or None if there is none."""
        try:
            raw = json.loads((workdir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        raw["processes"] = [Process(**p) for p in raw.get("processes", [])]
        raw["guests"] = [Guest(**g) for g in raw.get("guests", [])]
        return cls(**raw)
