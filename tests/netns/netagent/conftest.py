"""Control API (in-process), fake agent, proxy and netagent under one `ms-<run>-` prefix."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from metastack.api.control import make_control_app
from metastack.config import ApiConfig
from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

NETNS_TESTS = Path(__file__).parent.parent
METASTACK = Path(sys.executable).parent / "metastack"


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("dnsmasq", "busybox", "curl", "iptables-save"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")


class ControlApi:
    """The control API on 127.0.0.1:<ephemeral> in a thread of its own, called synchronously."""

    def __init__(self, database: Path) -> None:
        url = f"sqlite:///{database}"
        upgrade(url)
        self.store = SqlStore(url)
        self.config = ApiConfig.model_validate({"database_url": url})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _start(self) -> web.AppRunner:
        runner = web.AppRunner(make_control_app(self.config, self.store, poll_interval=0.05))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, document = self.call(method, path, body)
        assert status < 300, (method, path, status, document)
        return document

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.store.close()


@dataclass
class Run:
    """One test run's names, paths and processes (stopped by their own PID)."""

    run_id: str
    state: Path
    work: Path
    api: ControlApi
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"ms-{self.run_id}-"

    @property
    def fabric(self) -> str:
        return f"{self.prefix}fabric"

    @property
    def proxy_socket(self) -> Path:
        return self.work / "proxy.sock"

    @property
    def agent_socket(self) -> Path:
        return self.work / "agent.sock"

    def netagent_argv(self, *extra: str) -> list[str]:
        return [
            str(METASTACK),
            "netagent",
            "--control-url",
            self.api.url,
            "--host",
            f"{self.prefix}node",
            "--state-path",
            str(self.state),
            "--fabric-netns",
            self.fabric,
            "--namespace-prefix",
            self.prefix,
            "--proxy-control-socket",
            str(self.proxy_socket),
            "--force-metadata",
            "--resync-interval",
            "5",
            "--respawn-interval",
            "0.3",
            *extra,
        ]

    def start(self, name: str, argv: list[str], log: str | None = None) -> subprocess.Popen[bytes]:
        out = (self.work / (log or f"{name}.log")).open("ab")
        env = {**os.environ, "METASTACK_NETAGENT_FEED_WAIT": "5"}
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def start_netagent(self, log: str) -> subprocess.Popen[bytes]:
        return self.start("netagent", [*self.netagent_argv("--log-level", "DEBUG")], log)

    def start_proxy(self) -> subprocess.Popen[bytes]:
        argv = [
            str(METASTACK),
            "proxy",
            "--agent-socket",
            str(self.agent_socket),
            "--control-socket",
            str(self.proxy_socket),
            "--event-loop",
            "asyncio",
        ]
        proc = self.start("proxy", argv)
        wait_until(self.proxy_socket.exists, 10, "proxy control socket")
        return proc


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def sh(*argv: str, check: bool = True) -> str:
    """Run a command; its stdout."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.returncode} {done.stderr}")
    return done.stdout


def list_netns() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    run_id = os.urandom(3).hex()
    # dnsmasq re-reads its files after dropping privileges: the state tree must be readable.
    state = Path(tempfile.mkdtemp(prefix=f"ms-{run_id}-state-"))
    state.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix=f"ms-{run_id}-"))
    api = ControlApi(work / "control.sqlite")
    this = Run(run_id, state, work, api)
    try:
        sh("ip", "netns", "add", this.fabric)
        this.netns.append(this.fabric)
        sh("ip", "-n", this.fabric, "link", "set", "lo", "up")
        agent = [sys.executable, str(NETNS_TESTS / "fake_agent.py"), str(this.agent_socket)]
        this.start("agent", agent)
        wait_until(this.agent_socket.exists, 10, "fake agent socket")
        this.start_proxy()
        yield this
    finally:
        this.stop("netagent")
        subprocess.run([*this.netagent_argv(), "--cleanup"], capture_output=True, timeout=60)
        for name in list(this.procs):
            this.stop(name)
        for name in reversed(this.netns):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        api.close()
        for pidfile in state.glob("dhcp/*/pid"):  # only if --cleanup missed one
            pid = pidfile.read_text().strip()
            if pid.isdigit() and _runs_in(pid, str(state)):
                os.kill(int(pid), signal.SIGKILL)
        left = [name for name in list_netns() if name.startswith(this.prefix)]
        leftover_dnsmasq = [
            pid for pid in os.listdir("/proc") if pid.isdigit() and _runs_in(pid, str(state))
        ]
        shutil.rmtree(state, ignore_errors=True)
        if os.environ.get("METASTACK_KEEP_LOGS"):
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        assert not left, f"namespaces left behind: {left}"
        assert not leftover_dnsmasq, f"processes left behind: {leftover_dnsmasq}"
        assert not list(Path("/etc/netns").glob(f"{this.prefix}*"))


def _runs_in(pid: str, path: str) -> bool:
    try:
        return path in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
