"""Our proxy beside neutron's haproxy, each in front of the stand-in for neutron's own agent
(tests/support/neutron_agent.py, a process of its own): the same burst of guests against
the agent's listen backlog of 5, and the agent's bare-LF 404 passed on by both.

Both proxies run as processes on loopback ports in this namespace; haproxy with neutron's
configuration line for line (metastack.bench.haproxy). Root is needed for haproxy's
`user nobody`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metastack.bench import haproxy
from support import neutron_agent
from support.needs import missing
from support.ports import free_ports

NETWORK, UNKNOWN = "net-1", "net-none"
INSTANCE = "8a3f06f0-6c3c-4a6e-9d1e-0f6b3c1d2e4f"
METASTACK = str(Path(sys.executable).with_name("metastack"))
ROUNDS, BURST = 3, 200
AGENT_DELAY = 0.002  # the agent's RPC lookup and call to nova


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    reason = missing("the haproxy comparison", ("haproxy",), cloud_init=False)
    if reason:
        pytest.skip(reason)
    # haproxy drops to nobody before it connects: the agent's folder must be searchable.
    path = Path(tempfile.mkdtemp(prefix="ms-neutron-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, f"{what} exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


def end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started, by its PID."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_daemon(pid: int) -> None:
    """Stop a daemonised haproxy by the PID from its pid file (not our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def agent(workdir: Path) -> Iterator[str]:
    path = str(workdir / "metadata_proxy")
    table = json.dumps([[NETWORK, "127.0.0.1", INSTANCE]])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [sys.executable, neutron_agent.__file__, path, table, str(AGENT_DELAY)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        yield path
    finally:
        end(proc)
        proc.stdout.close()


@dataclass(frozen=True)
class Proxy:
    name: str
    ports: dict[str, int]  # identity -> loopback port


@pytest.fixture(scope="module")
def ours(workdir: Path, agent: str) -> Iterator[Proxy]:
    ports = dict(zip((NETWORK, UNKNOWN), free_ports(2), strict=True))
    listeners = "".join(
        f'[[proxy.listeners]]\nhost = "127.0.0.1"\nport = {port}\nnetwork_id = "{ident}"\n'
        for ident, port in ports.items()
    )
    config = workdir / "proxy.toml"
    config.write_text(
        f'[proxy]\nmetadata_proxy_socket = "{agent}"\ncontrol_socket = ""\n{listeners}'
    )
    log = (workdir / "proxy.log").open("wb")
    proc = subprocess.Popen([METASTACK, "proxy", "--config", str(config)], stderr=log)
    try:
        for port in ports.values():
            wait_port(port, proc, "metastack proxy")
        yield Proxy("metastack", ports)
    finally:
        end(proc)
        log.close()


@pytest.fixture(scope="module")
def theirs(workdir: Path, agent: str) -> Iterator[Proxy]:
    ports = dict(zip((NETWORK, UNKNOWN), free_ports(2), strict=True))
    user, group = haproxy._user_and_group()
    pids: list[int] = []
    try:
        for ident, port in ports.items():
            site = haproxy.Site("", f"127.0.0.1:{port}", "Network", ident)
            pidfile = workdir / f"{ident}.pid"
            conf = workdir / f"{ident}.haproxy.conf"
            conf.write_text(haproxy.render(site, agent, pidfile, user, group))
            subprocess.run([haproxy.HAPROXY, "-f", str(conf)], check=True, timeout=30)
            pids.append(haproxy._wait_pid(pidfile))
            wait_port(port, None, "haproxy")
        yield Proxy("haproxy", ports)
    finally:
        for pid in pids:
            stop_daemon(pid)


async def one(port: int, path: str) -> bytes:
    """A guest's request on a new connection, as cloud-init makes them; b"" on errors."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        return b""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 35)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return head + await asyncio.wait_for(reader.readexactly(length), 35)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return b""
    finally:
        writer.close()


async def burst(proxy: Proxy) -> tuple[Counter[str], float]:
    """ROUNDS bursts of BURST guests at once, a third of them at an unknown network:
    outcomes by kind ("ok", or the wrong status / "no answer") and the seconds taken."""
    outcomes: Counter[str] = Counter()
    began = time.monotonic()
    for _ in range(ROUNDS):
        idents = [UNKNOWN if n % 3 == 2 else NETWORK for n in range(BURST)]
        answers = await asyncio.gather(
            *(one(proxy.ports[i], neutron_agent.INSTANCE_ID_PATH) for i in idents)
        )
        for ident, answer in zip(idents, answers, strict=True):
            want = (b"HTTP/1.1 404 " if ident == UNKNOWN else b"HTTP/1.1 200 OK\r\n", INSTANCE)
            if not answer:
                outcomes["no answer"] += 1
            elif answer.startswith(want[0]) and (
                ident == UNKNOWN or answer.endswith(want[1].encode())
            ):
                outcomes["ok"] += 1
            else:
                outcomes[answer.split(b"\r\n", 1)[0].decode("latin-1")] += 1
    return outcomes, time.monotonic() - began


@pytest.mark.parametrize("which", ["ours", "theirs"])
def test_the_agents_404_is_passed_on(which: str, request: pytest.FixtureRequest) -> None:
    proxy: Proxy = request.getfixturevalue(which)
    answer = asyncio.run(one(proxy.ports[UNKNOWN], "/latest/meta-data/"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer
    assert body == neutron_agent.not_found("network", UNKNOWN).partition(b"\n\n")[2]


def test_a_burst_against_the_backlog_of_5(ours: Proxy, theirs: Proxy) -> None:
    results = {proxy.name: asyncio.run(burst(proxy)) for proxy in (ours, theirs)}
    for name, (outcomes, seconds) in results.items():
        print(f"{name}: {ROUNDS} x {BURST} guests at once in {seconds:.2f} s: {dict(outcomes)}")
    assert results["metastack"][0] == {"ok": ROUNDS * BURST}
