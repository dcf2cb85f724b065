"""Metrics, health, sd_notify and the drain of `metastack api` and `metastack proxy` as processes.

/metrics is read with prometheus-client's own parser after known traffic; every pinned
counter must have moved by exactly that traffic (the API's two workers counted together).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metastack.identity import sign_instance_id
from support.observe import get, metrics_url, notify_socket, scrape, value, wait_for

SECRET = "observe-secret"
METASTACK = str(Path(sys.executable).with_name("metastack"))
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")


@dataclass
class Api:
    process: subprocess.Popen[bytes]
    log: Path
    control: str
    metadata: str
    metrics: str

    def call(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def signed(self, path: str, uuid: str, *, signature: str | None = None) -> int:
        """One metadata request on a new connection, signed as the agent signs; its status."""
        headers = {
            "X-Instance-ID": uuid,
            "X-Tenant-ID": "p",
            "X-Instance-ID-Signature": signature or sign_instance_id(SECRET, uuid),
            "X-Forwarded-For": "10.0.0.5",
        }
        status, _ = self.call("GET", self.metadata + path, headers=headers)
        return status

    def workers(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return {int(pid) for pid in out.split()}


def api_config(tmp_path: Path, workers: int, **extra: Any) -> Path:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'api.sqlite'}",
        "metadata_proxy_shared_secret": SECRET,
        "control_listen": "127.0.0.1:0",
        "metadata_listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "workers": workers,
        **extra,
    }
    lines = ["[api]", *(f"{key} = {json.dumps(val)}" for key, val in values.items())]
    vendordata = values.pop("vendordata", None)
    if vendordata is not None:
        lines = [line for line in lines if not line.startswith("vendordata")]
        lines += ["[api.vendordata]", *(f"{k} = {json.dumps(v)}" for k, v in vendordata.items())]
    path = tmp_path / "api.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def started_api(tmp_path: Path, config: Path, env: dict[str, str] | None = None) -> Iterator[Api]:
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [METASTACK, "api", "--config", str(config)],
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(urls) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            urls = {name: f"http://{h}:{p}" for name, h, p in LISTEN_RE.findall(log.read_text())}
            time.sleep(0.05)
        api = Api(process, log, urls["control"], urls["metadata"], metrics_url(log))
        wait_for(lambda: get(api.metrics + "/readyz")[0] == 200, 30, "the API is ready")
        yield api
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def boot(api: Api) -> str:
    """One instance at 10.0.0.5 of project p; its uuid."""
    status, body = api.call("POST", api.control + "/v1/networks", {"name": "n", "project_id": "p"})
    assert status == 201, body
    network = json.loads(body)
    status, body = api.call(
        "POST",
        api.control + "/v1/subnets",
        {"network_id": network["id"], "cidr": "10.0.0.0/24", "ip_version": 4},
    )
    assert status == 201, body
    status, body = api.call(
        "POST",
        api.control + "/v1/instances",
        {
            "name": "vm",
            "project_id": "p",
            "networks": [{"network_id": network["id"], "ip_address": "10.0.0.5"}],
        },
    )
    assert status == 201, body
    uuid: str = json.loads(body)["uuid"]
    return uuid


REQUESTS = "metastack_metadata_requests_total"
SECONDS_COUNT = "metastack_metadata_request_seconds_count"


def test_api_workers_are_counted_together(tmp_path: Path) -> None:
    with started_api(tmp_path, api_config(tmp_path, workers=2)) as api:
        assert len(api.workers()) == 2
        uuid = boot(api)
        before = scrape(api.metrics)
        # Each request on a new connection: the kernel spreads them over both workers.
        ec2 = [api.signed("/latest/meta-data/local-hostname", uuid) for _ in range(12)]
        openstack = [api.signed("/openstack/latest/meta_data.json", uuid) for _ in range(8)]
        other = [get(api.metadata + "/")[0] for _ in range(5)]
        forged = [api.signed("/2009-04-04/meta-data/", uuid, signature="0" * 64) for _ in range(3)]
        assert (ec2, openstack, other, forged) == ([200] * 12, [200] * 8, [200] * 5, [403] * 3)

        expected = {("ec2", "200"): 12, ("openstack", "200"): 8, ("other", "200"): 5}
        expected[("ec2", "403")] = 3
        # Any worker may answer a scrape: every one of them must show both workers' counts.
        for _ in range(6):
            after = scrape(api.metrics)
            for (tree, status), count in expected.items():
                moved = value(after, REQUESTS, tree=tree, status=status) - value(
                    before, REQUESTS, tree=tree, status=status
                )
                assert moved == count, (tree, status, moved)
            assert value(after, SECONDS_COUNT) - value(before, SECONDS_COUNT) == 28

        # A worker killed and restarted goes on from its own count: no total goes back.
        victim = min(api.workers())
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(api.workers() - {victim}) == 2, 15, "the worker was replaced")
        wait_for(lambda: get(api.metrics + "/readyz")[0] == 200, 15, "ready again")
        assert [api.signed("/latest/meta-data/", uuid) for _ in range(4)] == [200] * 4
        for _ in range(4):
            final = scrape(api.metrics)
            moved = value(final, REQUESTS, tree="ec2", status="200") - value(
                before, REQUESTS, tree="ec2", status="200"
            )
            assert moved == 16
        metrics_dirs = re.findall(r"metastack-api-metrics-\w+", " ".join(os.listdir("/tmp")))
        assert metrics_dirs, "the workers' metrics directory is in the temporary folder"
    # Stopped: its private directory is gone.
    assert not [d for d in metrics_dirs if os.path.exists(f"/tmp/{d}")]


def test_api_health_and_sd_notify(tmp_path: Path) -> None:
    with notify_socket(tmp_path / "notify.sock") as notify:
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
        with started_api(tmp_path, api_config(tmp_path, workers=2), env) as api:
            pid, _ = notify.wait_for("READY=1", 30)
            assert pid == api.process.pid  # the supervisor speaks, not a worker
            notify.wait_for("WATCHDOG=1", 5)
            assert get(api.metrics + "/healthz") == (200, b"ok\n")
            assert get(api.metrics + "/nothing")[0] == 404
            api.process.send_signal(signal.SIGTERM)
            pid, _ = notify.wait_for("STOPPING=1", 10)
            assert pid == api.process.pid
            assert api.process.wait(timeout=20) == 0
        senders = {pid for pid, _ in notify.received}
        assert senders == {api.process.pid}, notify.received


class SlowVendor(http.server.BaseHTTPRequestHandler):
    """A dynamic vendor data target that answers after `delay` seconds."""

    delay = 2.0
    arrived = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).arrived.set()
        time.sleep(self.delay)
        body = b'{"slow": "finished"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_a_slow_request_finish(tmp_path: Path, workers: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowVendor)
    SlowVendor.arrived.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vendordata = {
        "providers": ["StaticJSON", "DynamicJSON"],
        "dynamic_targets": [f"slow@http://127.0.0.1:{server.server_address[1]}/"],
        "dynamic_read_timeout": 10.0,
    }
    config = api_config(tmp_path, workers=workers, shutdown_timeout=8.0, vendordata=vendordata)
    try:
        with started_api(tmp_path, config) as api:
            uuid = boot(api)
            answer: dict[str, Any] = {}

            def ask() -> None:
                headers = {
                    "X-Instance-ID": uuid,
                    "X-Tenant-ID": "p",
                    "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
                }
                answer["reply"] = api.call(
                    "GET", api.metadata + "/openstack/latest/vendor_data2.json", headers=headers
                )

            asker = threading.Thread(target=ask)
            asker.start()
            assert SlowVendor.arrived.wait(10), "the request never reached the vendor target"
            stopped_at = time.monotonic()
            api.process.send_signal(signal.SIGTERM)
            asker.join(15)
            status, body = answer["reply"]
            assert status == 200, body
            assert json.loads(body)["slow"] == {"slow": "finished"}
            assert api.process.wait(timeout=15) == 0
            # It waited for the request (about 2 s), not for the whole shutdown_timeout.
            assert time.monotonic() - stopped_at < 7.0
            assert "api stopping" in api.log.read_text()
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_sd_notify_and_health(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        "[proxy]\n"
        f'metadata_proxy_socket = "{tmp_path / "agent.sock"}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        'metrics_listen = "127.0.0.1:0"\n'
        'log_format = "json"\n'
    )
    log = tmp_path / "proxy.log"
    with notify_socket(tmp_path / "notify.sock") as notify, log.open("wb") as out:
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"}
        process = subprocess.Popen(
            [METASTACK, "proxy", "--config", str(config)], stdout=out, stderr=out, env=env
        )
        try:
            pid, _ = notify.wait_for("READY=1", 30)
            assert pid == process.pid
            for _ in range(2):
                notify.wait_for("WATCHDOG=1", 5)
            base = metrics_url(log)
            assert get(base + "/healthz")[0] == 200
            # Nobody serves the agent's socket: alive, not ready.
            assert get(base + "/readyz") == (503, b"not ready\n")
            samples = scrape(base)
            assert ("metastack_proxy_queued_requests", ()) in samples
            assert value(samples, "process_resident_memory_bytes") > 0
            process.send_signal(signal.SIGTERM)
            notify.wait_for("STOPPING=1", 10)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the proxy logged nothing"
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["message"].startswith("proxy ready") for line in lines)
