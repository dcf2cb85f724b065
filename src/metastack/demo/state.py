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


def _state(pid: int) -> str:
    """The one-letter state of a process (R, S, Z, ...); "" when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :][:1]


@dataclass
class Process:
    """A service the demo started: its PID and the config path that identifies it."""

    role: str
    pid: int
    marker: str  # a string of its command line (its config path): guards against PID reuse
    node: str = ""  # the node it belongs to (`api-1`, `net-2`)
    argv: list[str] = field(default_factory=list)  # how to start it again
    log: str = ""  # where its output goes (appended)

    def alive(self) -> bool:
        """True while this PID still runs the command the demo started."""
        for _ in range(50):
            try:
                cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            except OSError:
                return False
            if cmdline:
                return self.marker.encode() in cmdline
            # Empty: a zombie, or a process inside execve (nsenter becoming the service).
            if _state(self.pid) in ("Z", "X", ""):
                return False
            time.sleep(0.002)
        return False

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

    def kill(self) -> None:
        """SIGKILL at once, its process group with it (a power loss, no goodbye)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@dataclass
class Node:
    """One node of the demo: an API node or a network node, with its own namespace
    (None: the host's, the single-node demo) and folder, and what is scheduled to it."""

    name: str  # `api-1`, `net-2`
    role: str  # `api` or `network`
    namespace: str | None
    address: str  # its management address (the single-node demo: 127.0.0.1)
    directory: str  # its configs, sockets, pid files, leases, logs
    netns_prefix: str = ""  # a network node's qdhcp-/qrouter- namespace prefix
    networks: list[str] = field(default_factory=list)
    routers: list[str] = field(default_factory=list)

    def report(self, up: bool) -> dict[str, Any]:
        """The pinned keys of a node in `demo status --json`."""
        return {
            "name": self.name,
            "role": self.role,
            "namespace": self.namespace,
            "address": self.address,
            "up": up,
            "serves": {"networks": list(self.networks), "routers": list(self.routers)},
        }


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
    nodes: list[Node] = field(default_factory=list)
    database_url: str = ""  # set when given with --database
    created_database: bool = False  # the demo created it, so `down` drops it

    @property
    def multi_node(self) -> bool:
        """Whether the nodes are namespaces of their own (more than one API or network node)."""
        return any(node.namespace for node in self.nodes)

    def node(self, name: str) -> Node | None:
        """The node called `name`, if there is one."""
        return next((node for node in self.nodes if node.name == name), None)

    def processes_of(self, node: str) -> list[Process]:
        """The recorded processes of a node."""
        return [process for process in self.processes if process.node == node]

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
        raw["nodes"] = [Node(**n) for n in raw.get("nodes", [])]
        return cls(**raw)
