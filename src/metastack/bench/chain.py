"""`bench chain`: the whole path, wrk in a guest namespace -> proxy -> agent -> API, bounded.

Run as root: `metastack bench chain` (about a minute; `--help` for options).
Builds one network with a DHCP namespace, a router and a guest per metadata path, starts
`metastack api` (2 workers), `agent` and `proxy` through the CLI, creates the guest's
instance, then runs `ip netns exec <guest> wrk` against http://169.254.169.254 at each
concurrency for a fixed time, alternating `/openstack/latest/meta_data.json` with an
EC2 leaf. Prints req/s, latency percentiles, errors, and for every process its CPU
(user + system from /proc/PID/stat), CPU per request and RSS; writes the same to
docs/bench/chain.json (or `--output FILE`). Removes every namespace, process and file it made.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.bench.source import source_state
from metastack.errors import MetastackError
from metastack.lab import Lab
from metastack.lab.chain import Chain, sample_process

RESULTS = Path("docs/bench/chain.json")
PATHS = ("/openstack/latest/meta_data.json", "/latest/meta-data/instance-id")
TARGETS = {"c100_req_s": 3000, "c100_p99_ms": 50.0, "agent_rss_mb": 60.0}
CIDR = "10.78.0.0/24"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
CPUS = os.cpu_count() or 1


class ChainError(MetastackError):
    """The chain could not be measured (missing tools, a failed step)."""


# Each wrk connection walks the paths in turn, starting at a different one.
WRK_SCRIPT = """
local paths = {%s}
local index = 0
function init(args)
  index = math.random(#paths)
end
function request()
  index = index %% #paths + 1
  return wrk.format("GET", paths[index])
end
"""


@dataclass(frozen=True)
class Topology:
    lab: Lab
    guests: dict[str, str]  # path name ("dhcp", "router") -> guest namespace
    instances: dict[str, dict[str, Any]]


def build(lab: Lab, chain: Chain) -> Topology:
    """One network, its DHCP namespace and router, a guest on each path with an instance."""
    net = lab.network("n", CIDR)
    dhcp = lab.dhcp(net)
    router = lab.router([net])
    guests = {
        "dhcp": lab.guest(net, 5, metadata_via=dhcp),
        "router": lab.guest(net, 6, metadata_via="gateway"),
    }
    lab.apply()
    project = chain.call("POST", "/v1/projects", {"name": "bench"})
    network = chain.call("POST", "/v1/networks", {"name": "n", "project_id": project["id"]})
    subnet = chain.call("POST", "/v1/subnets", {"network_id": network["id"], "cidr": CIDR})
    routed = chain.call("POST", "/v1/routers", {"name": "r", "project_id": project["id"]})
    chain.call("POST", f"/v1/routers/{routed['id']}/interfaces", {"subnet_id": subnet["id"]})
    instances = {}
    for name, guest in guests.items():
        instances[name] = chain.call(
            "POST",
            "/v1/instances",
            {
                "name": f"bench-{name}",
                "project_id": project["id"],
                "networks": [{"network_id": network["id"], "ip_address": guest.address}],
                "key_name": "bench",
                "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAbench bench@lab",
            },
        )
    status, answer = chain.proxy_control().replace(
        [
            {"netns": dhcp.netns, "host": "169.254.169.254", "port": 80,
             "network_id": network["id"]},
            {"netns": router.netns, "host": "0.0.0.0", "port": 9697, "router_id": routed["id"]},
        ]
    )  # fmt: skip
    if status != 200 or answer["failed"]:
        raise ChainError(f"proxy listeners: {status} {answer}")
    topology = Topology(lab, {k: g.netns for k, g in guests.items()}, instances)
    for name, netns in topology.guests.items():  # the guest must get its own document
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "curl",
                "-sf",
                "-m",
                "5",
                f"http://169.254.169.254{PATHS[0]}",
            ],
            capture_output=True,
            text=True,
        ).stdout
        if not out or json.loads(out)["uuid"] != instances[name]["uuid"]:
            raise ChainError(f"{name} guest does not get its own metadata: {out!r}")
    return topology


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests, req/s, latency percentiles (ms) and error counts from `wrk --latency`."""
    result: dict[str, Any] = {"errors": {}}
    if match := re.search(r"(\d+) requests in ([\d.]+)(\w+)", text):
        result["requests"] = int(match.group(1))
    if match := re.search(r"Requests/sec:\s+([\d.]+)", text):
        result["req_s"] = float(match.group(1))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        result[f"p{pct}_ms"] = round(float(value) * UNITS[unit], 3)
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result["errors"]["non_2xx"] = int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        for name, value in zip(
            ("connect", "read", "write", "timeout"), match.groups(), strict=True
        ):
            if int(value):
                result["errors"][name] = int(value)
    return result


def processes(chain: Chain) -> dict[str, int]:
    """Role name -> PID for every process of the chain (api workers numbered)."""
    pids = chain.pids()
    named = {"api": pids["api"][0], "agent": pids["agent"][0], "proxy": pids["proxy"][0]}
    for index, pid in enumerate(pids.get("api-worker", [])):
        named[f"api-worker-{index}"] = pid
    return named


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def background_cores(seconds: float = 1.0) -> float:
    """Cores the machine keeps busy over `seconds` (before a run: everyone else's load)."""
    busy0, total0 = machine_busy()
    time.sleep(seconds)
    busy1, total1 = machine_busy()
    return (busy1 - busy0) / max(total1 - total0, 1e-9) * CPUS


def wait_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait up to `limit` seconds for background load under `threshold` cores; the last seen."""
    deadline = time.monotonic() + limit
    while True:
        load = background_cores()
        if load < threshold or time.monotonic() >= deadline:
            return round(load, 2)


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a process in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def load(
    netns: str, concurrency: int, seconds: int, script: Path, close: bool
) -> tuple[dict[str, Any], float]:
    """One wrk run inside `netns`; its parsed output and wrk's own CPU seconds."""
    threads = min(2, concurrency)
    argv = ["ip", "netns", "exec", netns, "wrk", f"-t{threads}", f"-c{concurrency}"]
    argv += [f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", str(script)]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append("http://169.254.169.254")
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # rusage: wrk's own CPU
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise ChainError(f"wrk failed ({proc.returncode}): {text}")
    result = parse_wrk(text)
    result["wrk_output"] = text
    return result, usage.ru_utime + usage.ru_stime


def measure(
    chain: Chain, netns: str, concurrency: int, seconds: int, script: Path, close: bool
) -> dict[str, Any]:
    """Load at one concurrency; throughput, latency, errors and per-process CPU and RSS."""
    named = processes(chain)
    before = {role: sample_process(pid) for role, pid in named.items()}
    busy0, total0 = machine_busy()
    started = time.monotonic()
    result, wrk_cpu = load(netns, concurrency, seconds, script, close)
    wall = time.monotonic() - started
    busy1, total1 = machine_busy()
    after = {role: sample_process(pid) for role, pid in named.items()}
    requests = max(int(result.get("requests", 0)), 1)
    cpu: dict[str, dict[str, float]] = {}
    for role, first in before.items():
        last = after[role]
        if first is None or last is None:
            raise ChainError(f"{role} (pid {named[role]}) exited during the run")
        used = last.cpu_seconds - first.cpu_seconds
        cpu[role] = {
            "cpu_s": round(used, 2),
            "cores": round(used / wall, 2),
            "cpu_us_per_req": round(used / requests * 1e6, 1),
            "rss_mb": round(last.rss_bytes / 2**20, 1),
            "peak_rss_mb": round(peak_rss(named[role]) / 2**20, 1),
        }
    cpu["wrk"] = {
        "cpu_s": round(wrk_cpu, 2),
        "cores": round(wrk_cpu / wall, 2),
        "cpu_us_per_req": round(wrk_cpu / requests * 1e6, 1),
    }
    result["concurrency"] = concurrency
    result["seconds"] = round(wall, 2)
    result["processes"] = cpu
    machine = (busy1 - busy0) / (total1 - total0) * CPUS
    result["machine_busy_cores"] = round(machine, 2)
    ours = sum(v["cores"] for v in cpu.values())
    result["other_processes_cores"] = round(max(machine - ours, 0.0), 2)
    services = {role: v for role, v in cpu.items() if role != "wrk"}
    result["api_workers_cores"] = round(
        sum(v["cores"] for role, v in services.items() if role.startswith("api-worker")), 2
    )
    for v in services.values():  # what this process alone could carry on one whole core
        v["one_core_ceiling_req_s"] = round(1e6 / v["cpu_us_per_req"]) if v["cpu_us_per_req"] else 0
    result["busiest"] = max(services, key=lambda role: services[role]["cores"])
    # One event loop per process: near one core it is the queue everything waits in.
    result["saturated"] = [role for role, v in services.items() if v["cores"] >= 0.8]
    per_request = sum(v["cpu_us_per_req"] for v in cpu.values())
    result["cpu_us_per_req_total"] = round(per_request, 1)
    result["machine_ceiling_req_s"] = round(CPUS * 1e6 / per_request) if per_request else 0
    return result


def report_line(path: str, run: dict[str, Any]) -> str:
    """One human-readable line per run."""
    procs = run["processes"]
    parts = [
        f"{path:6} c={run['concurrency']:<3}",
        f"{run.get('req_s', 0):8.0f} req/s",
        f"p50 {run.get('p50_ms', float('nan')):6.2f} ms",
        f"p99 {run.get('p99_ms', float('nan')):6.2f} ms",
        f"errors {sum(run['errors'].values())}",
        f"busy {run['machine_busy_cores']:.2f}/{CPUS} cores"
        f" (others {run['other_processes_cores']:.2f})",
    ]
    cpu = ", ".join(
        f"{role} {v['cores']:.2f}c {v['cpu_us_per_req']:.0f}us/req" for role, v in procs.items()
    )
    busiest = run["busiest"]
    state = "saturated" if busiest in run["saturated"] else "not saturated"
    summary = (
        f"busiest {busiest} ({procs[busiest]['cores']:.2f} cores, {state}); chain"
        f" {run['cpu_us_per_req_total']:.0f}us CPU/req -> at most"
        f" {run['machine_ceiling_req_s']} req/s on {CPUS} cores"
    )
    return " | ".join(parts) + f"\n           cpu: {cpu}\n           {summary}"


@dataclass(frozen=True)
class Options:
    """What `metastack bench chain` was asked to do."""

    duration: int = 8
    concurrency: tuple[int, ...] = (1, 10, 100)
    paths: tuple[str, ...] = ("dhcp", "router")
    api_workers: int = 2
    close: bool = False
    wait_quiet: float = 30.0
    output: Path = RESULTS


def run_chain(options: Options) -> dict[str, Any]:
    """Build, load, report, clean up; the report (also written to `options.output`)."""
    if os.geteuid() != 0 or not shutil.which("wrk") or not shutil.which("ip"):
        raise ChainError("needs root, ip and wrk")
    unknown = set(options.paths) - {"dhcp", "router"}
    if unknown:
        raise ChainError(f"--paths: unknown {', '.join(sorted(unknown))} (dhcp, router)")
    seconds = max(1, min(options.duration, 30))

    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"ms-{run_id}-bench-"))
    lab = Lab(run_id)
    chain = Chain(
        workdir,
        api_workers=options.api_workers,
        agent_log_level="WARNING",
        proxy={"log_level": "warning"},
    )
    script = workdir / "paths.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in PATHS))
    report: dict[str, Any] = {
        "machine": {"cpus": CPUS, "kernel": os.uname().release},
        "source": source_state(),
        "paths": list(PATHS),
        "duration_s": seconds,
        "api_workers": options.api_workers,
        "new_connection_per_request": options.close,
        "targets": TARGETS,
        "runs": {},
    }
    try:
        chain.start()
        topology = build(lab, chain)
        for path in options.paths:
            netns = topology.guests[path]
            load(netns, 10, 1, script, options.close)  # warm caches and connection pools
            runs = []
            for concurrency in options.concurrency:
                quiet = wait_quiet(options.wait_quiet)
                run = measure(chain, netns, concurrency, seconds, script, options.close)
                run["background_cores_before"] = quiet
                print(report_line(path, run), flush=True)
                run.pop("wrk_output")
                runs.append(run)
            report["runs"][path] = runs
        named = processes(chain)
        report["rss_mb_after"] = {
            role: round(peak_rss(pid) / 2**20, 1) for role, pid in named.items()
        }
    finally:
        chain.stop()
        lab.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    report["verdicts"] = verdicts(report["runs"])
    print("targets:", json.dumps(report["verdicts"]))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {options.output}")
    return report


def verdicts(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, bool]]:
    """Per path, each target met or not at concurrency 100 (paths without that run: none)."""
    found = {}
    for path, path_runs in runs.items():
        c100 = next((run for run in path_runs if run["concurrency"] == 100), None)
        if c100 is None:
            continue
        found[path] = {
            "c100_req_s": c100.get("req_s", 0) >= TARGETS["c100_req_s"],
            "c100_no_errors": not c100["errors"],
            "c100_p99_ms": c100.get("p99_ms", 1e9) < TARGETS["c100_p99_ms"],
            "agent_rss_mb": c100["processes"]["agent"]["peak_rss_mb"] < TARGETS["agent_rss_mb"],
        }
    return found
