"""`metastack api` as a real process: workers, freshness across workers, restarts, clean stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metastack.identity import sign_instance_id

SECRET = "process-test-secret"
TOKEN = "process-test-token-3f9a"
METASTACK = str(Path(sys.executable).with_name("metastack"))
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    log: Path
    control: str
    metadata: str

    def call(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def worker_pids(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return {int(pid) for pid in out.split()}


def write_config(tmp_path: Path, **extra: str) -> Path:
    lines = [
        "[api]",
        f'database_url = "sqlite:///{tmp_path / "api.sqlite"}"',
        f'metadata_proxy_shared_secret = "{SECRET}"',
        'control_listen = "127.0.0.1:0"',
        'metadata_listen = "127.0.0.1:0"',
        "workers = 2",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    path = tmp_path / "api.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiProcess]:
    with started_api(tmp_path, write_config(tmp_path)) as process:
        yield process


@contextlib.contextmanager
def started_api(tmp_path: Path, config: Path) -> Iterator[ApiProcess]:
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [METASTACK, "api", "--config", str(config)], stdout=out, stderr=out
        )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(urls) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            urls = {name: f"http://{h}:{p}" for name, h, p in LISTEN_RE.findall(log.read_text())}
            time.sleep(0.05)
        yield ApiProcess(process, log, urls["control"], urls["metadata"])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def boot(api: ApiProcess) -> dict[str, Any]:
    status, body = api.call("POST", api.control + "/v1/networks", {"name": "n", "project_id": "p"})
    network = json.loads(body)
    api.call(
        "POST",
        api.control + "/v1/subnets",
        {"network_id": network["id"], "cidr": "10.0.0.0/24", "ip_version": 4},
    )
    status, body = api.call(
        "POST",
        api.control + "/v1/instances",
        {
            "name": "vm",
            "project_id": "p",
            "hostname": "first",
            "networks": [{"network_id": network["id"], "ip_address": "10.0.0.5"}],
        },
    )
    assert status == 201, body
    instance: dict[str, Any] = json.loads(body)
    return instance


def hostname(api: ApiProcess, uuid: str) -> bytes:
    status, body = api.call(
        "GET",
        api.metadata + "/latest/meta-data/local-hostname",
        headers={
            "X-Instance-ID": uuid,
            "X-Tenant-ID": "p",
            "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
        },
    )
    assert status == 200, body
    return body


def test_workers_serve_fresh_documents_and_respawn(api: ApiProcess) -> None:
    workers = api.worker_pids()
    assert len(workers) == 2
    uuid = boot(api)["uuid"]
    assert {hostname(api, uuid) for _ in range(20)} == {b"first.novalocal"}
    status, _ = api.call("PATCH", api.control + f"/v1/instances/{uuid}", {"hostname": "second"})
    assert status == 200
    # every request opens a new connection, so both workers answer; none may be stale
    assert {hostname(api, uuid) for _ in range(20)} == {b"second.novalocal"}

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(api.worker_pids() - {victim}) < 2:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.1)
    assert {hostname(api, uuid) for _ in range(20)} == {b"second.novalocal"}


def test_sigterm_stops_every_worker(api: ApiProcess) -> None:
    workers = api.worker_pids()
    api.process.send_signal(signal.SIGTERM)
    assert api.process.wait(timeout=15) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_stop_when_the_supervisor_is_killed(api: ApiProcess) -> None:
    workers = api.worker_pids()
    assert workers
    os.kill(api.process.pid, signal.SIGKILL)
    api.process.wait(timeout=5)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"workers": "'two'"}, "api.workers"),
        ({"metadata_proxy_shared_secret": '""'}, "metadata_proxy_shared_secret is empty"),
    ],
)
def test_bad_config_fails_at_start(tmp_path: Path, extra: dict[str, str], needle: str) -> None:
    config = write_config(tmp_path)
    text = config.read_text()
    for key, value in extra.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    config.write_text(text)
    result = subprocess.run(
        [METASTACK, "api", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert needle in result.stderr


def test_control_api_off_loopback_needs_a_token(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on, to see that it stays so
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('"127.0.0.1:0"', f'"0.0.0.0:{port}"', 1))
    for extra in ([], ["--check"]):
        result = subprocess.run(
            [METASTACK, "api", "--config", str(config), *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert "api.admin_token is not set" in result.stderr
        assert f"control_listen 0.0.0.0:{port} is not a loopback address" in result.stderr
    assert not (tmp_path / "api.sqlite").exists()  # refused before the database
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with config.open("a") as handle:
        handle.write(f'admin_token_file = "{token_file}"\n')
    result = subprocess.run(
        [METASTACK, "api", "--config", str(config), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_token_file_guards_the_control_api_and_stays_out_of_the_log(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = write_config(tmp_path, admin_token_file=f'"{token_file}"', workers="1")
    config.write_text(config.read_text().replace("workers = 2\n", ""))
    with started_api(tmp_path, config) as api:
        status, body = api.call("GET", api.control + "/v1/networks")
        assert status == 401, body
        status, body = api.call("GET", api.control + "/v1/networks", headers={"X-Auth-Token": "x"})
        assert status == 401, body
        assert TOKEN.encode() not in body
        status, body = api.call(
            "GET", api.control + "/v1/networks", headers={"X-Auth-Token": TOKEN}
        )
        assert status == 200, body
        assert json.loads(body) == {"networks": []}
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=15) == 0
        log = api.log.read_text()
        assert "control API listening" in log
        assert TOKEN not in log
