"""`bench soak`: half the measured maximum load through the whole chain for long, no growth.

Run as root: `metastack bench soak` (30 minutes; `--duration 120` for the CI
length, `--help` for options). Starts `metastack demo up` with two guests (one reaching
169.254.169.254 through its router, one through its DHCP namespace) in a fresh folder,
measures the chain's maximum with a short wrk run from both guests at once (or takes
`--rate`), then holds half of it with a constant-rate generator inside each guest
(`metastack.lab.guest.load`: requests are due at fixed times, latency counts from the due
time). After `--warmup` seconds (75: longer than the agent's 60 s cache lifetime, so
the lookups after the first expiry are in the baseline) it samples RSS and open file
descriptors of every process (api parent and workers, agent, proxy, netagent, every
dnsmasq), again every
`--sample-every` seconds and at the end, while the load still runs. Passes when no
request failed, every process kept its PID, and RSS and descriptors grew less than
`--max-growth` percent (default 10). Writes docs/bench/soak.json (or `--json FILE`);
exits 1 when the verdict fails, 2 when it could not run. Removes everything it made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from metastack.bench.source import source_state
from metastack.demo.state import DemoState
from metastack.lab.chain import child_pids, sample_process
from metastack.lab.load import GuestLoad, merge_summaries, open_fds
from metastack.netns.dnsmasq import alive

RESULTS = Path("docs/bench/soak.json")
METASTACK = str(Path(sys.executable).with_name("metastack"))
PATHS = ("/latest/meta-data/instance-id", "/openstack/latest/meta_data.json")
MAX_SECONDS = 5.0  # length of each wrk run that measures the maximum
MAX_CONNECTIONS = 16  # per guest, for the maximum
# The baseline must include every periodic behaviour once: the agent's cached lookups
# expire after 60 s, and the lookups that follow widen its control-API connection pool.
WARMUP = 75.0
CONNECTIONS = 16  # per guest, for the soak: in flight at most; the rate sets the load
WRK_SCRIPT = """
local paths = {%s}
local index = 0
function request()
  index = index %% #paths + 1
  return wrk.format("GET", paths[index])
end
"""


@dataclass(frozen=True)
class Options:
    """What `metastack bench soak` was asked to do."""

    duration: float = 1800.0
    warmup: float = WARMUP
    rate: float | None = None  # total req/s; None: the measured maximum x fraction
    fraction: float = 0.5
    sample_every: float = 30.0
    max_growth: float = 10.0
    timeout: float = 20.0
    json: Path = RESULTS


class Interrupted(Exception):
    """SIGTERM or SIGINT: stop, clean up, report nothing."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass(frozen=True)
class Sample:
    """RSS, descriptors and CPU seconds used so far of one process at one moment."""

    role: str
    pid: int
    rss_bytes: int
    fds: int
    cpu_seconds: float
    at: float


def demo(*args: str, workdir: Path) -> str:
    """Run `metastack demo ARGS --workdir WORKDIR`; its stdout; raise when it fails."""
    done = subprocess.run(
        [METASTACK, "demo", *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"metastack demo {args[0]} failed: {done.stderr[-3000:]}")
    return done.stdout


def roles(workdir: Path) -> dict[str, int]:
    """Role -> PID of every process of the running demo (workers and dnsmasqs numbered)."""
    state = DemoState.load(workdir)
    if state is None:
        raise RuntimeError(f"no demo in {workdir}")
    found: dict[str, int] = {}
    for process in state.processes:
        if process.alive():
            found[process.role] = process.pid
    for index, worker in enumerate(child_pids(found.get("api", 0))):
        found[f"api-worker-{index + 1}"] = worker
    proxy = _pid_file(workdir / "netagent" / "proxy.pid")
    if proxy is not None:
        found["proxy"] = proxy
    for pidfile in sorted((workdir / "netagent" / "dhcp").glob("*/pid")):
        dhcp = _pid_file(pidfile)
        if dhcp is not None:
            found[f"dnsmasq-{pidfile.parent.name[:8]}"] = dhcp
    return found


def _pid_file(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def sample(pids: dict[str, int]) -> dict[str, Sample]:
    """RSS and open descriptors of each process that is still there."""
    samples: dict[str, Sample] = {}
    for role, pid in pids.items():
        memory = sample_process(pid)
        fds = open_fds(pid)
        if memory is not None and fds is not None:
            samples[role] = Sample(
                role, pid, memory.rss_bytes, fds, memory.cpu_seconds, time.monotonic()
            )
    return samples


def measure_max(namespaces: list[str], seconds: float) -> dict[str, Any]:
    """wrk from every guest at once; the summed req/s and each guest's run."""
    script = Path(tempfile.mkstemp(prefix="ms-soak-", suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in PATHS))
    try:
        runs = []
        for namespace in namespaces:
            argv = ["ip", "netns", "exec", namespace, "wrk", "-t1", f"-c{MAX_CONNECTIONS}"]
            argv += [f"-d{seconds:.0f}s", "-s", str(script), "http://169.254.169.254"]
            runs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        outputs = [run.communicate(timeout=seconds + 30)[0] for run in runs]
    finally:
        script.unlink()
    per_guest: list[dict[str, Any]] = []
    rates: list[float] = []
    for namespace, text in zip(namespaces, outputs, strict=True):
        match = re.search(r"Requests/sec:\s+([\d.]+)", text)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", text)
        if match is None:
            raise RuntimeError(f"wrk in {namespace} printed no rate:\n{text}")
        rates.append(float(match.group(1)))
        per_guest.append({"guest": namespace, "req_s": rates[-1], "errors": bool(errors)})
    return {"req_s": round(sum(rates), 1), "guests": per_guest}


def cores(first: Sample, last: Sample) -> float:
    """Average CPU (in cores) a process used between two samples."""
    elapsed = last.at - first.at
    return round((last.cpu_seconds - first.cpu_seconds) / elapsed, 3) if elapsed > 0 else 0.0


def growth(start: float, end: float) -> float:
    """Percent growth from start to end (0 when both are 0)."""
    if start <= 0:
        return 0.0 if end <= 0 else 100.0
    return (end - start) / start * 100


def verdict(
    start: dict[str, Sample],
    end: dict[str, Sample],
    load: dict[str, Any],
    target_rate: float,
    max_growth: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-process rows and the list of problems (empty: the soak passed)."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for role, first in start.items():
        last = end.get(role)
        if last is None or last.pid != first.pid:
            problems.append(f"{role} (pid {first.pid}) is gone or was restarted")
            continue
        rss_growth = round(growth(first.rss_bytes, last.rss_bytes), 2)
        fds_growth = round(growth(first.fds, last.fds), 2)
        row: dict[str, Any] = {
            "role": role,
            "pid": first.pid,
            "rss_mb_start": round(first.rss_bytes / 2**20, 2),
            "rss_mb_end": round(last.rss_bytes / 2**20, 2),
            "rss_growth_pct": rss_growth,
            "fds_start": first.fds,
            "fds_end": last.fds,
            "fds_growth_pct": fds_growth,
            "cpu_cores": cores(first, last),
        }
        rows.append(row)
        checks = [("RSS", rss_growth)]
        if not role.startswith("api-worker-"):  # their descriptors are judged together
            checks.append(("open descriptors", fds_growth))
        for what, grew in checks:
            if grew >= max_growth:
                problems.append(f"{role}: {what} grew {grew} %")
    # The agent's pooled connections land on either API worker (SO_REUSEPORT), and a
    # pooled connection opened later may land on the other one: a leak shows in the sum.
    workers = [r for r in start if r.startswith("api-worker-") and r in end]
    if workers:
        before = sum(start[r].fds for r in workers)
        grew = round(growth(before, sum(end[r].fds for r in workers)), 2)
        if grew >= max_growth:
            problems.append(f"api workers: open descriptors grew {grew} %")
    failed = load["requests"] - load["ok"]
    if failed:
        problems.append(f"{failed} requests failed: {load['statuses']} {load['errors']}")
    if load["rate"] < 0.95 * target_rate:
        problems.append(f"held {load['rate']} req/s of the {target_rate:.0f} asked")
    return rows, problems


def soak(options: Options, workdir: Path) -> dict[str, Any]:
    """Bring the demo up, measure, hold the load, sample; the report."""
    print(f"starting the demo in {workdir}", file=sys.stderr)
    guests = json.loads(
        demo("up", "--instances", "2", "--json", "--control-port", "0",
             "--metadata-port", "0", workdir=workdir)
    )  # fmt: skip
    namespaces = [g["namespace"] for g in guests]
    paths = sorted(g["path"] for g in guests)
    if paths != ["dhcp", "router"]:
        raise RuntimeError(f"expected one guest per metadata path, got {paths}")
    maximum: dict[str, Any] | None = None
    rate = options.rate
    if rate is None:
        maximum = measure_max(namespaces, MAX_SECONDS)
        rate = maximum["req_s"] * options.fraction
        print(f"maximum {maximum['req_s']} req/s; holding {rate:.0f} req/s", file=sys.stderr)
    total = options.warmup + options.duration
    loads = [
        GuestLoad(
            namespace,
            rate=rate / len(namespaces),
            connections=CONNECTIONS,
            duration=total,
            timeout=options.timeout,
            paths=PATHS,
            records=False,
        ).start()
        for namespace in namespaces
    ]
    try:
        started = time.monotonic()
        time.sleep(options.warmup)
        pids = roles(workdir)
        pids.update({f"load-{i + 1}": load.pid for i, load in enumerate(loads) if load.pid})
        first = sample(pids)
        timeline = [{"t": round(time.monotonic() - started, 1), **_totals(first)}]
        print(f"warm; sampled {len(first)} processes", file=sys.stderr)
        end_at = started + total - min(5.0, options.duration / 10)  # load still running
        while (left := end_at - time.monotonic()) > 0:
            time.sleep(min(options.sample_every, left))
            now = sample(pids)
            timeline.append({"t": round(time.monotonic() - started, 1), **_totals(now)})
            print(f"  {timeline[-1]}", file=sys.stderr)
        last = sample(pids)
        summaries = [load.wait() for load in loads]
    finally:
        for load in loads:
            load.stop()
    merged = merge_summaries(summaries)
    services = {role: s for role, s in first.items() if not role.startswith("load-")}
    rows, problems = verdict(services, last, merged, rate, options.max_growth)
    generators = [
        {
            "role": role,
            "rss_mb": round(s.rss_bytes / 2**20, 2),
            "cpu_cores": cores(s, last[role]) if role in last else None,
        }
        for role, s in first.items()
        if role.startswith("load-")
    ]
    return {
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "max_measured": maximum,
        "rate_target": round(rate, 1),
        "load": merged,
        "processes": rows,
        "generators": generators,
        "timeline": timeline,
        "max_growth_pct": options.max_growth,
        "ok": not problems,
        "problems": problems,
        "source": source_state(),
        "cpus": os.cpu_count(),
    }


def _totals(samples: dict[str, Sample]) -> dict[str, Any]:
    services = [s for role, s in samples.items() if not role.startswith("load-")]
    return {
        "rss_mb": round(sum(s.rss_bytes for s in services) / 2**20, 2),
        "fds": sum(s.fds for s in services),
    }


def print_report(report: dict[str, Any]) -> None:
    """The human-readable table."""
    load = report["load"]
    print(
        f"soak {report['duration_s']} s at {report['rate_target']} req/s "
        f"(held {load['rate']}): {load['requests']} requests, "
        f"{load['requests'] - load['ok']} failed, p50 {load['p50_ms']} ms, "
        f"p99 {load['p99_ms']} ms, max {load['max_ms']} ms"
    )
    print(f"{'process':<18} {'pid':>7} {'RSS MB start':>12} {'end':>8} {'%':>6} "
          f"{'fds start':>9} {'end':>5} {'%':>6} {'cores':>6}")  # fmt: skip
    for row in report["processes"]:
        print(
            f"{row['role']:<18} {row['pid']:>7} {row['rss_mb_start']:>12.2f} "
            f"{row['rss_mb_end']:>8.2f} {row['rss_growth_pct']:>6.1f} "
            f"{row['fds_start']:>9} {row['fds_end']:>5} {row['fds_growth_pct']:>6.1f} "
            f"{row['cpu_cores']:>6.2f}"
        )
    for generator in report["generators"]:
        print(f"generator {generator['role']}: {generator['rss_mb']} MB, "
              f"{generator['cpu_cores']} cores")  # fmt: skip
    print("PASS" if report["ok"] else "FAIL: " + "; ".join(report["problems"]), flush=True)


def run_soak(options: Options) -> int:
    """0 when the soak passed, 1 when it failed, 2 when it could not run."""
    if os.geteuid() != 0:
        print("metastack bench soak: needs root (namespaces, dnsmasq)", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="ms-soak-"))
    folder.chmod(0o755)  # dnsmasq runs as nobody and reads the files below it
    workdir = folder / "state"
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = soak(options, workdir)
    except (Interrupted, RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"metastack bench soak: {exc}", file=sys.stderr)
        return 2
    finally:
        for signum in previous:  # the cleanup is not interrupted halfway
            signal.signal(signum, signal.SIG_IGN)
        print("removing the demo", file=sys.stderr)
        subprocess.run(
            [METASTACK, "demo", "down", "--workdir", str(workdir)],
            capture_output=True,
            timeout=120,
        )
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"written to {options.json}", file=sys.stderr)
    return 0 if report["ok"] else 1
