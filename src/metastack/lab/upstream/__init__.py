"""Upstream's own metadata services as processes, for the interop tests and benchmarks.

nova's metadata API and neutron's metadata agent run from PyPI's nova and neutron in
their own virtual environment (`scripts/upstream-venv` builds `.upstream-venv`); their
database and RPC lookups are answered from JSON files the caller writes. haproxy runs with
the configuration neutron's own code writes. The scripts of this folder run under the
upstream environment's Python and never import metastack; this module only starts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.errors import MetastackError
from metastack.netns.exec import NetnsError, run
from metastack.netns.sockets import unix_socket_accepts

UPSTREAM_VENV = ".upstream-venv"
HAPROXY = "/usr/sbin/haproxy"
START_TIMEOUT = 180.0  # their imports take 5-20 s, more on a loaded machine


class UpstreamError(MetastackError):
    """An upstream service could not be found, configured or started."""


def script(name: str) -> Path:
    """The path of an upstream-side script of this folder, e.g. `script("neutron_agent")`."""
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():
        raise FileNotFoundError(f"no upstream script {name!r} in {path.parent}")
    return path


def find_python(checkout: Path) -> Path:
    """The upstream environment's Python under a checkout; UpstreamError if it is missing."""
    python = checkout / UPSTREAM_VENV / "bin" / "python"
    if not python.exists():
        raise UpstreamError(f"no {python}: run {checkout / 'scripts' / 'upstream-venv'} first")
    return python


@dataclass
class Service:
    """One upstream process: its own process group, its output in `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Return once `ready()`; UpstreamError (with the log's end) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not ready():
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                what = f"exited with {code}" if code is not None else f"not ready in {timeout} s"
                raise UpstreamError(f"{self.name} {what}; log:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL of its group; safe to repeat."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


def _spawn(name: str, argv: list[str], log: Path, pass_fds: tuple[int, ...] = ()) -> Service:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            env=env,
        )
    return Service(name, process, log)


def _ini(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))


def start_nova_metadata(
    python: Path,
    workdir: Path,
    *,
    secret: str,
    instances: Path,
    vendor_json: Path | None = None,
    cache_expiration: int = 15,
) -> tuple[Service, int]:
    """Start nova's metadata API on 127.0.0.1 (a port bound here and handed over, so it is
    known at once); returns the service and the port. Wait for it with `nova_ready`."""
    workdir.mkdir(parents=True, exist_ok=True)
    api: dict[str, Any] = {"metadata_cache_expiration": cache_expiration}
    if vendor_json is not None:
        api["vendordata_jsonfile_path"] = vendor_json
    conf = workdir / "nova.conf"
    _ini(
        conf,
        {
            "DEFAULT": {"debug": True, "log_file": workdir / "nova-metadata.log"},
            "api": api,
            "neutron": {"service_metadata_proxy": True, "metadata_proxy_shared_secret": secret},
        },
    )
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    try:
        argv = [str(python), str(script("nova_metadata")), "--config-file", str(conf)]
        argv += ["--instances", str(instances), "--fd", str(listener.fileno())]
        service = _spawn("nova metadata API", argv, workdir / "nova.out", (listener.fileno(),))
        return service, listener.getsockname()[1]
    finally:
        listener.close()  # the child holds its own copy


def nova_ready(service: Service) -> bool:
    """True once nova's WSGI server serves (the script says so on its output)."""
    return "serving" in service.output()


def start_neutron_agent(
    python: Path,
    workdir: Path,
    *,
    socket_path: Path,
    nova_port: int,
    secret: str,
    ports: Path,
    workers: int | None = None,
) -> Service:
    """Start neutron's metadata agent on `socket_path`, forwarding to 127.0.0.1:nova_port;
    port lookups are answered from `ports` (see `neutron_ports`). Wait with `unix_ready`.
    `workers` None keeps neutron's default (half the CPUs)."""
    workdir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "debug": False,
        "log_file": workdir / "neutron-metadata-agent.log",
        "state_path": workdir,
        "metadata_proxy_socket": socket_path,
        "nova_metadata_host": "127.0.0.1",
        "nova_metadata_port": nova_port,
        "metadata_proxy_shared_secret": secret,
    }
    if workers is not None:
        values["metadata_workers"] = workers
    ini = workdir / "metadata_agent.ini"
    _ini(ini, {"DEFAULT": values, "AGENT": {"report_interval": 0}})
    argv = [str(python), str(script("neutron_agent")), "--ports", str(ports)]
    argv += ["--config-file", str(ini)]
    return _spawn("neutron metadata agent", argv, workdir / "neutron-agent.out")


def unix_ready(path: Path) -> Callable[[], bool]:
    """A readiness check: the unix socket at `path` accepts connections."""
    return lambda: unix_socket_accepts(path)


def neutron_ports(ports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ports file for `start_neutron_agent`, from control API port objects (the fields
    neutron-server's `get_ports` returns that the agent reads or filters on)."""
    keys = ("id", "device_id", "device_owner", "network_id", "project_id", "mac_address")
    converted = []
    for port in ports:
        item = {key: port[key] for key in keys}
        item["tenant_id"] = port["project_id"]
        item["fixed_ips"] = [
            {"subnet_id": ip["subnet_id"], "ip_address": ip["ip_address"]}
            for ip in port["fixed_ips"]
        ]
        converted.append(item)
    return {"ports": converted}


def write_json(path: Path, document: Any) -> None:
    """Replace a JSON file at once (the upstream scripts re-read it when it changes)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, path)


@dataclass(frozen=True, slots=True)
class HaproxySite:
    """One namespace proxy as neutron's agents run it."""

    netns: str
    kind: str  # "network" or "router"
    uuid: str
    bind_address: str  # "169.254.169.254" (DHCP) or "0.0.0.0" (router)
    port: int  # 80 or 9697


@dataclass(frozen=True, slots=True)
class HaproxyCommand:
    site: HaproxySite
    argv: tuple[str, ...]  # as neutron's process manager runs it in the namespace
    pid_file: Path


def neutron_haproxy_configs(
    python: Path, state_path: Path, agent_socket: Path, sites: list[HaproxySite]
) -> list[HaproxyCommand]:
    """Have neutron's own code write each site's haproxy configuration under `state_path`."""
    request = {
        "state_path": str(state_path),
        "metadata_proxy_socket": str(agent_socket),
        "sites": [
            {"uuid": s.uuid, "kind": s.kind, "bind_address": s.bind_address, "port": s.port}
            for s in sites
        ],
    }
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [str(python), str(script("haproxy_config"))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=env,
    )
    if done.returncode != 0:
        raise UpstreamError(f"neutron's haproxy configuration failed: {done.stderr[-2000:]}")
    answers = json.loads(done.stdout)["sites"]
    by_uuid = {s.uuid: s for s in sites}
    return [
        HaproxyCommand(by_uuid[a["uuid"]], tuple(a["argv"]), Path(a["pid_file"])) for a in answers
    ]


def start_haproxy(command: HaproxyCommand, timeout: float = 10.0) -> int:
    """Run one haproxy in its namespace as neutron does (`ip netns exec NS haproxy -f CONF`,
    daemonised); its PID from the pid file."""
    argv = list(command.argv)
    if argv[0] == "haproxy":
        argv[0] = HAPROXY
    command.pid_file.unlink(missing_ok=True)
    run(["ip", "netns", "exec", command.site.netns, *argv], timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(command.pid_file.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            time.sleep(0.02)
    raise NetnsError(f"haproxy in {command.site.netns}: no live pid in {command.pid_file}")


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemon's parent is init, which may reap it late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM a process we started (haproxy), SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
