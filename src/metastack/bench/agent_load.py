"""`bench agent-load`: load the agent over its unix socket; req/s, p50/p99, errors, RSS.

Starts stand-ins for the control API and the metadata API in a child process
(`metastack.bench.stubs`), `metastack agent` in another, then drives the socket with
keep-alive connections (as the namespace proxy does) at each concurrency, rotating over
guests on several networks (after a warm-up, every lookup is a cache hit). The metadata
API stand-in is a lean http11 server by default (--api lean) so that the agent sets the
pace; --api aiohttp serves it with aiohttp, as the agent tests' fake does. Each
concurrency runs --rounds times and the round with the median agent CPU per request is
reported; a markdown table closes the output. The load generator runs on uvloop when
installed (--loop). With --py-spy FILE the agent is sampled by py-spy (on PATH or in the
venv) in one extra round at the highest concurrency. Bounded: at most --requests per run
(capped at 200 000) and --max-seconds per run. --agent-src DIR runs the agent from
another checkout's src/ (e.g. an older commit) under the same load.

    metastack bench agent-load [--requests 20000] [--concurrency 1 10 100]
        [--rounds 3] [--loop uvloop|asyncio] [--api lean|aiohttp] [--py-spy agent.raw]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metastack.bench.stubs import GUESTS_PER_NETWORK, NETWORKS, SECRET, guest, loop_runner
from metastack.errors import MetastackError

METASTACK = str(Path(sys.executable).with_name("metastack"))


class AgentLoadError(MetastackError):
    """The stand-ins or the agent did not start."""


@dataclass(frozen=True)
class Options:
    """What `metastack bench agent-load` was asked to do."""

    requests: int = 20000
    concurrency: tuple[int, ...] = (1, 10, 100)
    rounds: int = 3
    max_seconds: float = 30.0
    cache_expiration: float = 60.0
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    py_spy: Path | None = None
    api: Literal["lean", "aiohttp"] = "lean"
    agent_src: Path | None = None


def request_bytes(n: int) -> bytes:
    network, ip = guest(n)
    return (
        f"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        f"X-Forwarded-For: {ip}\r\nX-Neutron-Network-ID: {network}\r\n\r\n"
    ).encode()


async def worker(
    path: str, first: int, count: int, step: int, latencies: list[float], deadline: float
) -> int:
    """One keep-alive connection sending `count` requests in turn; returns the error count."""
    reader, writer = await asyncio.open_unix_connection(path)
    errors = 0
    guests = NETWORKS * GUESTS_PER_NETWORK
    try:
        for i in range(count):
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            writer.write(request_bytes((first + i * step) % guests))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
    finally:
        writer.close()
    return errors


async def load(path: str, concurrency: int, requests: int, max_seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + max_seconds
    per_worker = max(1, requests // concurrency)
    began = time.perf_counter()
    errors = await asyncio.gather(
        *(worker(path, w, per_worker, concurrency, latencies, deadline) for w in range(concurrency))
    )
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "errors": sum(errors),
    }


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of a process in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(path: Path, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait (20 s at most) until `process` has made `path`."""
    deadline = time.monotonic() + 20
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AgentLoadError(f"{what} did not start")
        time.sleep(0.05)


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample the agent until stopped with SIGINT; None when py-spy is not installed."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("bench: py-spy not found; no profile taken")
        return None
    argv = [exe, "record", "-p", str(pid), "-r", "250", "--nonblocking", "-o", str(output)]
    argv += ["-f", "raw" if output.suffix == ".raw" else "speedscope"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    pid: int, path: str, concurrency: int, options: Options, profile: bool
) -> dict[str, Any]:
    """Several rounds at one concurrency; the round with the median CPU per request."""
    run = loop_runner(options.loop)
    rows: list[dict[str, Any]] = []
    # The profiled round is an extra one: py-spy's own CPU would distort a measured round.
    for index in range(options.rounds + int(profile)):
        spy = None
        if index == options.rounds and options.py_spy is not None:
            spy = start_py_spy(pid, options.py_spy)
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        row = run(load(path, concurrency, min(options.requests, 200_000), options.max_seconds))
        used = cpu_seconds(pid) - cpu_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            continue
        current, peak = rss_mb(pid)
        row |= {
            "agent_cpu_pct": round(used / (time.monotonic() - began) * 100),
            # CPU per request: the figure that does not depend on who else is busy.
            "agent_cpu_us_per_req": round(used / max(1, row["requests"]) * 1e6),
            "agent_rss_mb": round(current, 1),
            "agent_peak_rss_mb": round(peak, 1),
        }
        rows.append(row)
    rows.sort(key=lambda r: r["agent_cpu_us_per_req"])
    chosen = rows[len(rows) // 2]
    chosen["cpu_us_per_req_rounds"] = [r["agent_cpu_us_per_req"] for r in rows]
    chosen["rps_median"] = round(statistics.median(r["rps"] for r in rows))
    return chosen


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| concurrency | req/s | p50 ms | p99 ms | errors | agent CPU µs/req | agent RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} "
            f"| {r['agent_cpu_us_per_req']} | {r['agent_rss_mb']} |"
        )
    return "\n".join(lines)


def run_agent_load(options: Options) -> list[dict[str, Any]]:
    """Start the stand-ins and the agent, warm its cache, measure each concurrency; the
    rows (also printed, one JSON line each, then as a table). Both processes are stopped."""
    env = {"PYTHONHASHSEED": "0"} | os.environ
    with tempfile.TemporaryDirectory(prefix="ms-agent-bench-") as tmp:
        work = Path(tmp)
        ports_file, socket_path = work / "ports.json", work / "agent.sock"
        fakes = subprocess.Popen(
            [sys.executable, "-m", "metastack.bench.stubs", str(ports_file), options.api],
            env=env,
        )
        agent: subprocess.Popen[bytes] | None = None
        try:
            wait_for(ports_file, fakes, "the stand-in APIs")
            ports = json.loads(ports_file.read_text())
            config = work / "agent.toml"
            config.write_text(
                "[agent]\n"
                f'metadata_proxy_socket = "{socket_path}"\n'
                f'metadata_proxy_shared_secret = "{SECRET}"\n'
                f'metadata_endpoints = ["http://127.0.0.1:{ports["api"]}"]\n'
                f'control_url = "http://127.0.0.1:{ports["control"]}"\n'
                f"cache_expiration = {options.cache_expiration}\n"
            )
            source = {"PYTHONPATH": str(options.agent_src)} if options.agent_src else {}
            agent = subprocess.Popen(
                [METASTACK, "agent", "--config", str(config), "--log-level", "WARNING"],
                env=env | source,
            )
            wait_for(socket_path, agent, "metastack agent")
            print(f"agent pid {agent.pid}, RSS at start {rss_mb(agent.pid)[0]:.1f} MB")
            asyncio.run(load(str(socket_path), 10, 2000, options.max_seconds))  # warm the cache
            rows = []
            for concurrency in options.concurrency:
                profile = options.py_spy is not None and concurrency == max(options.concurrency)
                rows.append(measure(agent.pid, str(socket_path), concurrency, options, profile))
                print(json.dumps(rows[-1]))
            print(table(rows))
        finally:
            for process in (agent, fakes):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM if process is agent else signal.SIGINT)
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
    return rows
