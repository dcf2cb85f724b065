"""The metadata chain as processes: `metastack api`, `agent`, `proxy` from generated configs.

A :class:`Chain` owns one work directory (configs, SQLite database, sockets, logs), starts
each service through the CLI, waits until it is ready, and stops exactly the processes it
started (by PID; each runs in its own process group, so forked API workers go with their
parent). The API keeps its ports across restarts, so agent and proxy reach it again
without being restarted. Used by the e2e tests, the demo and the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from metastack.errors import MetastackError
from metastack.netns.sockets import unix_socket_accepts
from metastack.proxy.client import ProxyClient

Service = Literal["api", "agent", "proxy"]
SERVICES: tuple[Service, ...] = ("api", "agent", "proxy")
_LISTENING = re.compile(r"(control|metadata) API listening on (\S+):(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ChainError(MetastackError):
    """A chain process failed to start or to stop; the message ends with its log."""


class ControlCallError(MetastackError):
    """The control API answered an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status
        self.body = body


def default_command() -> list[str]:
    """The `metastack` console script beside the running interpreter, else from PATH."""
    beside = Path(sys.executable).parent / "metastack"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("metastack")
    if found is None:
        raise ChainError("no `metastack` command beside the interpreter or on PATH")
    return [found]


def control_call(
    base_url: str, token: str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> Any:
    """One control API request with the admin token; the decoded JSON answer.

    An error status raises ControlCallError; 204 returns None.
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
    request = Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urlopen(request, timeout=timeout) as response:
            text = response.read()
    except HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ControlCallError(method, path, exc.code, detail) from None
    return json.loads(text) if text else None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):  # an inline table, e.g. the API's `vendordata`
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, section: str, values: Mapping[str, Any]) -> None:
    """Write one `[section]` of scalars, lists and inline tables, readable by the owner only."""
    lines = [f"[{section}]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """CPU seconds (user + system) and resident memory of one process at one moment."""

    pid: int
    cpu_seconds: float
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample | None:
    """Read /proc/PID/stat and statm; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])
    return ProcessSample(pid, (utime + stime) / _CLK_TCK, int(statm.split()[1]) * _PAGE)


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from /proc (e.g. the API's forked workers)."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            children += [int(child) for child in text]
    except FileNotFoundError:
        return []
    return sorted(set(children))


@dataclass
class Running:
    """One started service: its process, log file and where its log began for this start."""

    service: Service
    process: subprocess.Popen[bytes]
    log: Path
    log_offset: int

    @property
    def pid(self) -> int:
        """The PID the chain started (also the process group id)."""
        return self.process.pid

    def output(self) -> str:
        """What this start has logged so far."""
        with self.log.open("rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode("utf-8", "replace")


@dataclass
class Chain:
    """api -> agent -> proxy as processes, configured under `workdir`.

    `api`, `agent` and `proxy` hold extra config keys of each section (e.g.
    `{"upstream_timeout": 3.0}` for the agent); the keys that wire the chain together
    (ports, sockets, secret, token, database) are filled in. Use as a context manager;
    stop() is safe to repeat and also runs when a start fails.
    """

    workdir: Path
    api_workers: int = 1
    api: Mapping[str, Any] = field(default_factory=dict)
    agent: Mapping[str, Any] = field(default_factory=dict)
    proxy: Mapping[str, Any] = field(default_factory=dict)
    command: Sequence[str] = field(default_factory=default_command)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    host: str = "127.0.0.1"
    agent_log_level: str = "INFO"
    start_timeout: float = 30.0
    stop_timeout: float = 15.0
    control_port: int = 0
    metadata_port: int = 0
    _running: dict[Service, Running] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    # Where things are.

    @property
    def control_url(self) -> str:
        """Base URL of the control API (known once the API has started)."""
        return f"http://{self.host}:{self.control_port}"

    @property
    def metadata_url(self) -> str:
        """Base URL of the metadata API (known once the API has started)."""
        return f"http://{self.host}:{self.metadata_port}"

    @property
    def database_url(self) -> str:
        """The SQLite database of this chain."""
        return f"sqlite:///{self.workdir / 'metastack.sqlite'}"

    @property
    def agent_socket(self) -> Path:
        """The agent's unix socket, which the proxy forwards to."""
        return self.workdir / "agent.sock"

    @property
    def proxy_socket(self) -> Path:
        """The proxy's control socket (PUT /listeners)."""
        return self.workdir / "proxy.sock"

    def config_path(self, service: Service) -> Path:
        """The generated config file of a service."""
        return self.workdir / f"{service}.toml"

    def log_path(self, service: Service) -> Path:
        """Where a service's stdout and stderr go (appended across restarts)."""
        return self.workdir / f"{service}.log"

    # Lifecycle.

    def start(self) -> Chain:
        """Start api, agent and proxy in that order, each ready before the next."""
        try:
            self.start_api()
            self.start_agent()
            self.start_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_api(self) -> Running:
        """Start `metastack api`; ready when both APIs log their address."""
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "metadata_proxy_shared_secret": self.secret,
            "admin_token": self.admin_token,
            "control_listen": f"{self.host}:{self.control_port}",
            "metadata_listen": f"{self.host}:{self.metadata_port}",
            "workers": self.api_workers,
            **self.api,
        }
        running = self._spawn("api", values, [])
        ports: dict[str, int] = {}
        self._wait(running, lambda: self._api_ports(running, ports) >= 2)
        # Pin the ports, so a restart listens where agent and proxy already point.
        self.control_port, self.metadata_port = ports["control"], ports["metadata"]
        return running

    def start_agent(self) -> Running:
        """Start `metastack agent`; ready when its socket accepts connections."""
        if not self.control_port:
            raise ChainError("start the API before the agent")
        values: dict[str, Any] = {
            "metadata_proxy_socket": str(self.agent_socket),
            "metadata_proxy_shared_secret": self.secret,
            "admin_token": self.admin_token,
            "nova_metadata_host": self.host,
            "nova_metadata_port": self.metadata_port,
            "control_url": self.control_url,
            **self.agent,
        }
        running = self._spawn("agent", values, ["--log-level", self.agent_log_level])
        self._wait(running, lambda: unix_socket_accepts(self.agent_socket))
        return running

    def start_proxy(self) -> Running:
        """Start `metastack proxy` with no listeners; ready when its control socket answers."""
        values: dict[str, Any] = {
            "metadata_proxy_socket": str(self.agent_socket),
            "control_socket": str(self.proxy_socket),
            **self.proxy,
        }
        running = self._spawn("proxy", values, [])
        self._wait(running, lambda: unix_socket_accepts(self.proxy_socket))
        return running

    def stop(self) -> None:
        """Stop every running service, proxy first; safe to call any number of times."""
        errors = []
        for service in reversed(SERVICES):
            try:
                self.stop_service(service)
            except ChainError as exc:
                errors.append(str(exc))
        if errors:
            raise ChainError("; ".join(errors))

    def stop_api(self) -> float:
        """Stop the API (SIGTERM, its workers with it); returns the seconds it took."""
        return self.stop_service("api")

    def stop_service(self, service: Service) -> float:
        """SIGTERM the started PID, SIGKILL its group after `stop_timeout`; seconds taken."""
        running = self._running.pop(service, None)
        if running is None:
            return 0.0
        started = time.monotonic()
        proc = running.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait(5)
        # Anything left in the group (a worker whose parent died first) goes too.
        _kill_group(proc.pid)
        return time.monotonic() - started

    def restart(self, service: Service) -> Running:
        """Stop then start one service with the same config (and, for the API, ports)."""
        self.stop_service(service)
        starts = {"api": self.start_api, "agent": self.start_agent, "proxy": self.start_proxy}
        return starts[service]()

    # Talking to the running chain.

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One control API request with the admin token; the decoded JSON answer.

        An error status raises ControlCallError; 204 returns None.
        """
        return control_call(self.control_url, self.admin_token, method, path, body, timeout)

    def proxy_control(self) -> ProxyClient:
        """A client of the proxy's control socket (listeners)."""
        return ProxyClient(str(self.proxy_socket))

    # Observation.

    def running(self, service: Service) -> Running | None:
        """The running start of a service, if any."""
        return self._running.get(service)

    def pids(self) -> dict[str, list[int]]:
        """PIDs per process role: `api` (the parent), `api-worker`s, `agent`, `proxy`."""
        found: dict[str, list[int]] = {}
        for service, running in self._running.items():
            if running.process.poll() is not None:
                continue
            found[service] = [running.pid]
            if service == "api":
                found["api-worker"] = child_pids(running.pid)
        return found

    def logs(self) -> dict[str, str]:
        """Every service's whole log file (all its starts)."""
        return {
            service: self.log_path(service).read_text(errors="replace")
            for service in SERVICES
            if self.log_path(service).exists()
        }

    def __enter__(self) -> Chain:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Internals.

    def _spawn(self, service: Service, values: Mapping[str, Any], extra: list[str]) -> Running:
        if service in self._running:
            raise ChainError(f"{service} is already running (pid {self._running[service].pid})")
        config = self.config_path(service)
        write_config(config, service, values)
        log = self.log_path(service)
        offset = log.stat().st_size if log.exists() else 0
        argv = [*self.command, service, "--config", str(config), *extra]
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: workers are stopped with it
            )
        running = Running(service, process, log, offset)
        self._running[service] = running
        return running

    def _wait(self, running: Running, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            code = running.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop_service(running.service)
                what = f"exited with {code}" if code is not None else "is not ready"
                tail = running.output()[-4000:]
                raise ChainError(
                    f"{running.service} {what} after {self.start_timeout:.0f} s; log:\n{tail}"
                )
            time.sleep(0.02)

    @staticmethod
    def _api_ports(running: Running, ports: dict[str, int]) -> int:
        for match in _LISTENING.finditer(running.output()):
            ports[match.group(1)] = int(match.group(3))
        return len(ports)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
