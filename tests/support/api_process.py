"""`metastack api` as a real process for tests: start it on ephemeral ports, call it, stop it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.identity import sign_instance_id

METASTACK = str(Path(sys.executable).with_name("metastack"))
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")
SECRET = "process-test-secret"


@dataclass
class ApiProcess:
    """A running `metastack api` and the base URLs of its two APIs."""

    process: subprocess.Popen[bytes]
    log: Path
    control: str
    metadata: str

    def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """One request on a new connection; (status, decoded JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A control API call that must succeed."""
        status, answer = self.call(method, self.control + path, body)
        assert 200 <= status < 300, (status, answer)
        return answer

    def meta_data(self, instance: dict[str, Any]) -> dict[str, Any]:
        """The instance's meta_data.json, signed as the agent would ask for it."""
        uuid = instance["uuid"]
        request = urllib.request.Request(
            self.metadata + "/openstack/latest/meta_data.json",
            headers={
                "X-Instance-ID": uuid,
                "X-Tenant-ID": instance["project_id"],
                "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document


def write_config(path: Path, database_url: str, **extra: str) -> Path:
    """An [api] config on ephemeral ports; `extra` values are TOML literals."""
    lines = [
        "[api]",
        f'database_url = "{database_url}"',
        f'metadata_proxy_shared_secret = "{SECRET}"',
        'control_listen = "127.0.0.1:0"',
        'metadata_listen = "127.0.0.1:0"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `metastack api --config config`, its output going to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([METASTACK, "api", "--config", str(config)], stdout=out, stderr=out)


def serving(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> ApiProcess:
    """Wait until the process says where both APIs listen."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(urls) < 2:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        urls = {name: f"http://{h}:{p}" for name, h, p in LISTEN_RE.findall(log.read_text())}
        time.sleep(0.05)
    return ApiProcess(process, log, urls["control"], urls["metadata"])


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
