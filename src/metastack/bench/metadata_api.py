"""`bench metadata-api`: the metadata API alone, signed requests from wrk at c=10 and c=100.

Starts `metastack api` (SQLite in a temporary directory, N workers), creates instances
through the control API, warms the document cache, then runs wrk against
`/openstack/latest/meta_data.json` and an EC2 leaf, rotating over the instances with
correctly signed headers. Prints req/s, p50/p99 and errors, and writes JSON
(docs/bench/metadata_api.json unless `--json FILE`).

    metastack bench metadata-api [--duration 10] [--workers 2] [--instances 100] [--json FILE]
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.errors import MetastackError
from metastack.identity import sign_instance_id

RESULTS = Path("docs/bench/metadata_api.json")
METASTACK = str(Path(sys.executable).with_name("metastack"))
PATHS = {
    "meta_data.json": "/openstack/latest/meta_data.json",
    "ec2 leaf": "/latest/meta-data/local-hostname",
}
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")


class MetadataApiError(MetastackError):
    """The benchmark could not run (the API did not start, wrk is missing)."""


@dataclass(frozen=True)
class Options:
    """What `metastack bench metadata-api` was asked to do."""

    duration: int = 10
    workers: int = 2
    instances: int = 100
    json: Path = RESULTS


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def start_api(
    workdir: Path, workers: int, secret: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    config = workdir / "api.toml"
    config.write_text(
        "[api]\n"
        f'database_url = "sqlite:///{workdir}/bench.sqlite"\n'
        f'metadata_proxy_shared_secret = "{secret}"\n'
        'control_listen = "127.0.0.1:0"\n'
        'metadata_listen = "127.0.0.1:0"\n'
        f"workers = {workers}\n"
    )
    with (workdir / "api.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [METASTACK, "api", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(urls) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise MetadataApiError(
                "metastack api did not start:\n" + (workdir / "api.log").read_text()
            )
        for name, host, port in LISTEN_RE.findall((workdir / "api.log").read_text()):
            urls[name] = f"http://{host}:{port}"
        time.sleep(0.1)
    return process, urls


def create_instances(control: str, count: int) -> list[tuple[str, str]]:
    """`count` instances on one network; (uuid, fixed IP) of each."""
    network = _post(control, "/v1/networks", {"name": "bench", "project_id": "bench", "mtu": 1450})
    _post(
        control,
        "/v1/subnets",
        {
            "network_id": network["id"],
            "cidr": "10.0.0.0/16",
            "ip_version": 4,
            "gateway_ip": "10.0.0.1",
        },
    )
    instances = []
    for n in range(count):
        ip = f"10.0.{n // 250 + 1}.{n % 250 + 2}"
        instance = _post(
            control,
            "/v1/instances",
            {
                "name": f"bench-{n}",
                "project_id": "bench",
                "networks": [{"network_id": network["id"], "ip_address": ip}],
                "key_name": "bench",
                "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench@metastack",
                "metadata": {"role": "bench"},
            },
        )
        instances.append((instance["uuid"], ip))
    return instances


def lua_script(path: str, instances: list[tuple[str, str]], secret: str) -> str:
    # Each request as the agent signs it: the instance's id and the address it holds (the
    # API refuses an instance that does not hold the forwarded address).
    rows = ",\n".join(
        "{"
        f'["X-Instance-ID"]="{uuid}", ["X-Tenant-ID"]="bench", '
        f'["X-Instance-ID-Signature"]="{sign_instance_id(secret, uuid)}", '
        f'["X-Forwarded-For"]="{ip}", ["Host"]="169.254.169.254"'
        "}"
        for uuid, ip in instances
    )
    return f"""
local headers = {{
{rows}
}}
local requests = {{}}
for i, h in ipairs(headers) do requests[i] = wrk.format("GET", "{path}", h) end
local n = 0
request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end
"""


def parse_wrk(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = float(text[:-2] if text.endswith(("us", "ms")) else text[:-1]), text[-2:]
        if unit == "us":
            return value / 1000
        if unit == "ms":
            return value
        return value * 1000  # seconds

    result: dict[str, float] = {"errors": 0}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith(("50%", "99%")):
            key, value = line.split()
            result[f"p{key[:-1]}_ms"] = ms(value)
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(line.split()[-1])
        elif line.startswith("Socket errors:"):
            result["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
        elif "requests in" in line:
            result["requests"] = int(line.split()[0])
    return result


def run_metadata_api(options: Options) -> dict[str, Any]:
    """Start the API, create instances, run wrk per document and concurrency; the report
    (also written to `options.json`). The API is stopped and its folder removed."""
    if not shutil.which("wrk"):
        raise MetadataApiError("needs wrk")
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ms-bench-") as tmp:
        workdir = Path(tmp)
        api, urls = start_api(workdir, options.workers, secret)
        try:
            instances = create_instances(urls["control"], options.instances)
            rows = []
            for label, path in PATHS.items():
                script = workdir / "signed.lua"
                script.write_text(lua_script(path, instances, secret))
                subprocess.run(  # warm every instance's cache entry
                    ["wrk", "-t1", "-c4", "-d1s", "-s", str(script), urls["metadata"]],
                    check=True,
                    capture_output=True,
                )
                for concurrency in (10, 100):
                    out = subprocess.run(
                        [
                            "wrk",
                            "-t1",
                            f"-c{concurrency}",
                            f"-d{options.duration}s",
                            "--latency",
                            "-s",
                            str(script),
                            urls["metadata"],
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    row = {"document": label, "concurrency": concurrency, **parse_wrk(out)}
                    rows.append(row)
                    print(
                        f"{label:15} c={concurrency:<4} {row['rps']:>9.0f} req/s  "
                        f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                        f"errors {int(row['errors'])}",
                        flush=True,
                    )
        finally:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(timeout=15)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
    result = {
        "workers": options.workers,
        "instances": options.instances,
        "cpus": os.cpu_count(),
        "duration_s": options.duration,
        "runs": rows,
    }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {options.json}")
    return result
