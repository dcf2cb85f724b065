"""`bench proxy-listeners`: one proxy process holding N namespace listeners; RSS (and req/s).

Run as root: `metastack bench proxy-listeners --count 1000 --wrk-seconds 5`.
Creates namespaces `ms-<run>-l<i>` (loopback only), starts `metastack proxy` with a
control socket, installs one listener per namespace on 169.254.169.254:80 with a single
PUT, checks a few of them from inside their namespace, optionally runs wrk (c=100) in
one namespace against a minimal stand-in agent, prints the results as JSON, and removes
everything it made.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from metastack.errors import MetastackError
from metastack.lab import Lab
from metastack.netns.apply import apply
from metastack.netns.exec import run as run_command
from metastack.netns.plan import AddAddress
from metastack.proxy.client import ProxyClient


class ProxyListenersError(MetastackError):
    """The proxy did not start, or a listener did not answer."""


REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class StubAgent(asyncio.Protocol):
    """Answers every request with a fixed 200 (requests are assumed to fit one read)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(REPLY * data.count(b"\r\n\r\n"))  # type: ignore[attr-defined]


def start_stub_agent(path: str) -> None:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main() -> None:
        server = await loop.create_unix_server(StubAgent, path, backlog=4096)
        ready.set()
        async with server:  # held (and closed) here: an unreferenced server may be collected
            await asyncio.Event().wait()

    threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True).start()
    ready.wait(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProxyListenersError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_proxy_listeners(count: int, wrk_seconds: int, event_loop: str) -> dict[str, object]:
    """Namespaces, listeners, a check of three and optionally a wrk run; the figures."""
    results: dict[str, object] = {"listeners": count, "event_loop": event_loop}
    workdir = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    proxy: subprocess.Popen[bytes] | None = None
    lab = Lab(secrets.token_hex(3))
    try:
        started = time.monotonic()
        names = [lab.namespace("l") for _ in range(count)]
        lab.apply()
        results["netns_create_s"] = round(time.monotonic() - started, 2)
        agent, ctl = workdir / "agent.sock", workdir / "ctl.sock"
        start_stub_agent(str(agent))
        argv = [str(Path(sys.executable).parent / "metastack"), "proxy", "--log-level", "warning"]
        argv += ["--agent-socket", str(agent), "--control-socket", str(ctl)]
        argv += ["--event-loop", event_loop]
        proxy = subprocess.Popen(argv)
        deadline = time.monotonic() + 20
        while not ctl.exists():
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise ProxyListenersError("proxy did not start")
            time.sleep(0.05)
        results["rss_idle_mib"] = round(rss_kib(proxy.pid) / 1024, 1)
        specs = [
            {"netns": name, "host": "169.254.169.254", "network_id": f"net-{i}"}
            for i, name in enumerate(names)
        ]
        started = time.monotonic()
        status, doc = ProxyClient(str(ctl)).replace(specs)
        results["listeners_add_s"] = round(time.monotonic() - started, 2)
        if status != 200 or doc["failed"] or len(doc["listeners"]) != count:
            raise ProxyListenersError(f"PUT /listeners: {status} {doc.get('failed', doc)!r:.300}")
        results["rss_mib"] = round(rss_kib(proxy.pid) / 1024, 1)
        sample = [names[0], names[count // 2], names[-1]]
        apply(AddAddress(n, "lo", "169.254.169.254/32") for n in sample)
        for name in sample:
            url = "http://169.254.169.254/latest/meta-data/"
            done = run_command(["ip", "netns", "exec", name, "curl", "-sf", "-m", "5", url])
            if done.stdout != "ok\n":
                raise ProxyListenersError(f"listener in {name} answered {done.stdout!r}")
        if wrk_seconds and shutil.which("wrk"):
            cpu = cpu_seconds(proxy.pid)
            url = "http://169.254.169.254/latest/meta-data/"
            wrk = ["wrk", "-t1", "-c100", f"-d{wrk_seconds}s", url]
            out = run_command(["ip", "netns", "exec", names[0], *wrk], timeout=wrk_seconds + 30)
            rate = 0.0
            for line in out.stdout.splitlines():
                if line.startswith("Requests/sec:"):
                    rate = float(line.split()[1])
                if "Non-2xx" in line or "Socket errors" in line:
                    results["wrk_errors"] = line.strip()
            results["wrk_c100_req_s"] = rate
            used = cpu_seconds(proxy.pid) - cpu
            results["proxy_cpu_per_req_us"] = round(used / max(rate * wrk_seconds, 1) * 1e6, 1)
            results["rss_after_load_mib"] = round(rss_kib(proxy.pid) / 1024, 1)
    finally:
        if proxy is not None and proxy.poll() is None:
            proxy.terminate()
            proxy.wait(10)
        started = time.monotonic()
        lab.cleanup()
        results["netns_delete_s"] = round(time.monotonic() - started, 2)
        shutil.rmtree(workdir, ignore_errors=True)
    return results
