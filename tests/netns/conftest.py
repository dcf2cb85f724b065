"""Root tier: real namespaces, a fake agent and proxy processes; everything removed after."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metastack.lab import Lab
from metastack.proxy.client import ProxyClient
from support.needs import missing

HERE = Path(__file__).parent
METASTACK = Path(sys.executable).parent / "metastack"


def _why_not() -> str | None:
    return missing("the netns tier", ("ip", "curl"), cloud_init=False)


@pytest.fixture(scope="module", autouse=True)
def _netns_capable() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)


class Processes:
    """Processes started by a test, stopped by their own PID (never by name)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


@pytest.fixture(scope="module")
def procs() -> Iterator[Processes]:
    held = Processes()
    yield held
    held.stop_all()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths must stay under 108 bytes.
    return tmp_path_factory.mktemp("px", numbered=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    built = Lab(secrets.token_hex(3), ipv6=True)
    try:
        yield built
    finally:
        built.cleanup()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert built.prefix not in left
        assert not list(Path("/etc/netns").glob(f"{built.prefix}*"))


def wait_for_path(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear (exit {proc.poll()})")
        time.sleep(0.05)


def start_agent(procs: Processes, workdir: Path) -> subprocess.Popen[bytes]:
    path = workdir / "agent.sock"
    path.unlink(missing_ok=True)
    argv = [sys.executable, str(HERE / "fake_agent.py"), str(path)]
    proc = procs.start(argv, workdir / "agent.log")
    wait_for_path(path, proc)
    return proc


def control(path: Path, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """Call the proxy's control API."""
    return ProxyClient(str(path)).call(method, url, body)


def curl(netns: str, url: str, *headers: str, timeout: float = 5) -> tuple[int, str]:
    """curl from inside a namespace: (HTTP status or -curl exit code, body)."""
    argv = ["ip", "netns", "exec", netns, "curl", "-sg", "-m", str(timeout)]
    for header in headers:
        argv += ["-H", header]
    argv += ["-w", "\n%{http_code}", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
    if done.returncode != 0:
        return -done.returncode, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body
