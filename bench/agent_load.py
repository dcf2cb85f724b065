"""Load the metadata agent over its unix socket; print req/s, p50/p99, errors and agent RSS.

Starts the fake control API and fake metadata API of the agent tests in a child process,
`metastack agent` in another, then drives the socket with keep-alive connections (as
the namespace proxy does) at each concurrency, rotating over guests on several networks.
Bounded: at most --requests per run (capped at 200 000) and --max-seconds per run.

    .venv/bin/python bench/agent_load.py [--requests 20000] [--concurrency 1 10 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from integration.agent.agent_fakes import (  # noqa: E402
    SECRET,
    FakeControl,
    FakeMetadata,
    serving,
)

NETWORKS = 10
GUESTS_PER_NETWORK = 50


def guest(n: int) -> tuple[str, str]:
    """(network id, IP) of guest n."""
    return f"net-{n % NETWORKS}", f"10.0.{n // NETWORKS // 250}.{n // NETWORKS % 250 + 2}"


async def run_fakes(port_file: Path) -> None:
    """Child process: serve both fakes until killed; write their ports to port_file."""
    control = FakeControl()
    for n in range(NETWORKS * GUESTS_PER_NETWORK):
        network, ip = guest(n)
        control.add_port(f"port-{n}", network, ip, f"inst-{n}")
    async with (
        serving(control.app()) as control_port,
        serving(FakeMetadata(SECRET).app()) as api_port,
    ):
        port_file.write_text(json.dumps({"control": control_port, "api": api_port}))
        await asyncio.Event().wait()


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
    deadline = time.monotonic() + 20
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench: {what} did not start")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cap per run")
    parser.add_argument("--cache-expiration", type=float, default=60.0, help="0 = no cache")
    parser.add_argument("--fakes", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fakes is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_fakes(args.fakes))
        return 0
    requests = min(args.requests, 200_000)

    with tempfile.TemporaryDirectory(prefix="ms-agent-bench-") as tmp:
        work = Path(tmp)
        ports_file, socket_path = work / "ports.json", work / "agent.sock"
        fakes = subprocess.Popen([sys.executable, __file__, "--fakes", str(ports_file)])
        agent: subprocess.Popen[bytes] | None = None
        try:
            wait_for(ports_file, fakes, "the fake APIs")
            ports = json.loads(ports_file.read_text())
            config = work / "agent.toml"
            config.write_text(
                "[agent]\n"
                f'metadata_proxy_socket = "{socket_path}"\n'
                f'metadata_proxy_shared_secret = "{SECRET}"\n'
                f'metadata_endpoints = ["http://127.0.0.1:{ports["api"]}"]\n'
                f'control_url = "http://127.0.0.1:{ports["control"]}"\n'
                f"cache_expiration = {args.cache_expiration}\n"
            )
            agent = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/metastack"),
                    "agent",
                    "--config",
                    str(config),
                    "--log-level",
                    "WARNING",
                ]
            )
            wait_for(socket_path, agent, "metastack agent")
            print(f"agent pid {agent.pid}, RSS at start {rss_mb(agent.pid)[0]:.1f} MB")
            asyncio.run(load(str(socket_path), 10, 2000, args.max_seconds))  # warm the cache
            for concurrency in args.concurrency:
                cpu_before, began = cpu_seconds(agent.pid), time.monotonic()
                row = asyncio.run(load(str(socket_path), concurrency, requests, args.max_seconds))
                used = cpu_seconds(agent.pid) - cpu_before
                busy = used / (time.monotonic() - began)
                current, peak = rss_mb(agent.pid)
                row |= {
                    "agent_cpu_pct": round(busy * 100),
                    # CPU per request: the figure that does not depend on who else is busy.
                    "agent_cpu_us_per_req": round(used / max(1, row["requests"]) * 1e6),
                    "agent_rss_mb": round(current, 1),
                    "agent_peak_rss_mb": round(peak, 1),
                }
                print(json.dumps(row))
        finally:
            for process in (agent, fakes):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM if process is agent else signal.SIGINT)
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
