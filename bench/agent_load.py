"""Load the metadata agent over its unix socket; print req/s, p50/p99, errors and agent RSS.

Starts the fake control API and a metadata API stand-in in a child process, `metastack
agent` in another, then drives the socket with keep-alive connections (as the namespace
proxy does) at each concurrency, rotating over guests on several networks (after a
warm-up, every lookup is a cache hit). The stand-in is a lean http11 server by default
(--api lean) so that the agent sets the pace; --api aiohttp uses the heavier fake of the
agent tests. Each concurrency runs --rounds times and the round with the median agent
CPU per request is reported; a markdown table closes the output. The load generator
runs on uvloop when installed (--loop). With --py-spy FILE the agent is sampled by py-spy
(on PATH or in the venv) in one extra round at the highest concurrency. Bounded: at most
--requests per run (capped at 200 000) and --max-seconds per run. --agent-src DIR runs
the agent from another checkout's src/ (e.g. an older commit) under the same load.

    .venv/bin/python bench/agent_load.py [--requests 20000] [--concurrency 1 10 100]
        [--rounds 3] [--loop uvloop|asyncio] [--api lean|aiohttp] [--py-spy agent.raw]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from integration.agent.agent_fakes import (  # noqa: E402
    SECRET,
    FakeControl,
    FakeMetadata,
    serving,
)
from metastack import identity  # noqa: E402
from metastack.http11 import HttpServer, Limits, Request, Response  # noqa: E402

NETWORKS = 10
GUESTS_PER_NETWORK = 50


def guest(n: int) -> tuple[str, str]:
    """(network id, IP) of guest n."""
    return f"net-{n % NETWORKS}", f"10.0.{n // NETWORKS // 250}.{n // NETWORKS % 250 + 2}"


async def lean_api(request: Request, peer: str) -> Response:
    """A metadata API stand-in far cheaper than the aiohttp fake: checks the signature and
    answers a small JSON document, so the agent rather than the fake sets the pace."""
    headers = {name.lower(): value.decode() for name, value in request.headers}
    instance = headers.get(b"x-instance-id", "")
    if not identity.verify_instance_id(
        SECRET, instance, headers.get(b"x-instance-id-signature", "")
    ):
        return Response(403, b"Forbidden", [], b"Invalid proxy request signature.")
    body = json.dumps({"uuid": instance, "project_id": headers.get(b"x-tenant-id", "")})
    return Response(200, b"OK", [(b"Content-Type", b"application/json")], body.encode())


async def run_fakes(port_file: Path, api: str) -> None:
    """Child process: serve both fakes until killed; write their ports to port_file."""
    control = FakeControl()
    for n in range(NETWORKS * GUESTS_PER_NETWORK):
        network, ip = guest(n)
        control.add_port(f"port-{n}", network, ip, f"inst-{n}")
    if api == "lean":
        sock = socket.create_server(("127.0.0.1", 0))
        lean = await HttpServer.start(lean_api, Limits(), sock, backlog=1024)
        async with serving(control.app()) as control_port:
            ports = {"control": control_port, "api": sock.getsockname()[1]}
            port_file.write_text(json.dumps(ports))
            await asyncio.Event().wait()
        await lean.close(0)
        return
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


def loop_runner(name: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """asyncio.run, or uvloop.run when asked for and installed."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("bench: uvloop not installed; the load generator runs on asyncio")
        else:
            return uvloop.run  # type: ignore[no-any-return,unused-ignore]
    return asyncio.run


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample the agent until stopped with SIGINT; None when py-spy is not installed."""
    exe = shutil.which("py-spy") or str(ROOT / ".venv/bin/py-spy")
    if not Path(exe).exists():
        print("bench: py-spy not found; no profile taken")
        return None
    argv = [exe, "record", "-p", str(pid), "-r", "250", "--nonblocking", "-o", str(output)]
    argv += ["-f", "raw" if output.suffix == ".raw" else "speedscope"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    pid: int, path: str, concurrency: int, args: argparse.Namespace, profile: bool
) -> dict[str, Any]:
    """Several rounds at one concurrency; the round with the median CPU per request."""
    run = loop_runner(args.loop)
    rows: list[dict[str, Any]] = []
    # The profiled round is an extra one: py-spy's own CPU would distort a measured round.
    for index in range(args.rounds + int(profile)):
        spy = start_py_spy(pid, args.py_spy) if index == args.rounds else None
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        row = run(load(path, concurrency, min(args.requests, 200_000), args.max_seconds))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=3, help="runs per concurrency")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cap per run")
    parser.add_argument("--cache-expiration", type=float, default=60.0, help="0 = no cache")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--py-spy", type=Path, help="profile output (.raw or speedscope)")
    parser.add_argument(
        "--api",
        choices=["lean", "aiohttp"],
        default="lean",
        help="metadata API stand-in: lean (http11, cheap) or the aiohttp fake of the tests",
    )
    parser.add_argument("--agent-src", type=Path, help="run the agent from this src/ instead")
    parser.add_argument("--fakes", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fakes is not None:
        with contextlib.suppress(KeyboardInterrupt):
            loop_runner("uvloop")(run_fakes(args.fakes, args.api))
        return 0
    args.rounds = max(1, args.rounds)

    with tempfile.TemporaryDirectory(prefix="ms-agent-bench-") as tmp:
        work = Path(tmp)
        ports_file, socket_path = work / "ports.json", work / "agent.sock"
        fakes = subprocess.Popen(
            [sys.executable, __file__, "--fakes", str(ports_file), "--api", args.api]
        )
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
                ],
                env=os.environ | ({"PYTHONPATH": str(args.agent_src)} if args.agent_src else {}),
            )
            wait_for(socket_path, agent, "metastack agent")
            print(f"agent pid {agent.pid}, RSS at start {rss_mb(agent.pid)[0]:.1f} MB")
            asyncio.run(load(str(socket_path), 10, 2000, args.max_seconds))  # warm the cache
            rows = []
            for concurrency in args.concurrency:
                profile = args.py_spy is not None and concurrency == max(args.concurrency)
                rows.append(measure(agent.pid, str(socket_path), concurrency, args, profile))
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
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
