"""`metastack api` started before its PostgreSQL: it waits, says so, and serves once it is up."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from metastack.identity import sign_instance_id

from .conftest import SECRET, PrivatePostgres, free_port

pytestmark = pytest.mark.root

METASTACK = str(Path(sys.executable).with_name("metastack"))
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")
RETRY_LINE = "database not ready"


def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, (
            f"{what} not seen in {timeout} s:\n{log.read_text()}"
        )
        time.sleep(0.05)
    return time.monotonic() - started


def test_api_waits_for_database(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    config = tmp_path / "api.toml"
    config.write_text(
        "[api]\n"
        f'database_url = "{private_postgres.url}"\n'
        f'metadata_proxy_shared_secret = "{SECRET}"\n'
        f'control_listen = "127.0.0.1:{free_port()}"\n'
        f'metadata_listen = "127.0.0.1:{free_port()}"\n'
        "workers = 2\n"
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [METASTACK, "api", "--config", str(config)], stdout=out, stderr=out
        )
    try:
        wait_for(lambda: RETRY_LINE in log.read_text(), 15, "the retry log line", log)
        time.sleep(2.5)  # it keeps waiting (more than one retry) without exiting
        assert process.poll() is None, log.read_text()
        assert not LISTEN_RE.search(log.read_text()), (
            "it must not listen before the schema is there"
        )
        retries = log.read_text().count(RETRY_LINE)
        assert retries >= 2, log.read_text()

        private_postgres.start()
        started = time.monotonic()
        wait_for(lambda: len(LISTEN_RE.findall(log.read_text())) == 2, 30, "listening", log)
        urls = {
            name: f"http://{host}:{port}" for name, host, port in LISTEN_RE.findall(log.read_text())
        }
        status, body = call(
            "POST", urls["control"] + "/v1/networks", {"project_id": "p", "name": "n"}
        )
        assert status == 201, body
        network = json.loads(body)
        call(
            "POST",
            urls["control"] + "/v1/subnets",
            {"network_id": network["id"], "cidr": "10.0.0.0/24"},
        )
        status, body = call(
            "POST",
            urls["control"] + "/v1/instances",
            {"name": "vm", "project_id": "p", "networks": [{"network_id": network["id"]}]},
        )
        assert status == 201, body
        uuid = json.loads(body)["uuid"]
        headers = {
            "X-Instance-ID": uuid,
            "X-Tenant-ID": "p",
            "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
        }
        status, body = call(
            "GET", urls["metadata"] + "/openstack/latest/meta_data.json", headers=headers
        )
        assert status == 200, body
        print(
            f"\nAPI before database: {retries} retry log lines while down; serving "
            f"{time.monotonic() - started:.2f} s after the server started"
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
