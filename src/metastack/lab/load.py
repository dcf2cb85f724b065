"""Host side of the guest load generator: start it inside a guest namespace, collect, stop.

`GuestLoad` runs `lab/guest/load.py` under `ip netns exec <guest>` (so every request leaves
from inside the guest, never from the host's namespace), keeps the per-request records it
prints and its final summary, and stops it by the PID it started. Used by the fault tests
under load and by the soak benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from metastack.lab.guest import script
from metastack.lab.guest.load import percentile

OK = 200


@dataclass(frozen=True, slots=True)
class Record:
    """One request a guest made: when it started (CLOCK_MONOTONIC), how long, its answer."""

    guest: str
    started: float
    seconds: float
    status: int
    error: str

    @property
    def ended(self) -> float:
        """When the answer (or the failure) came."""
        return self.started + self.seconds

    @property
    def ok(self) -> bool:
        """True for a 200."""
        return self.status == OK

    @property
    def kind(self) -> str:
        """`200`, `503`, ... or the error kind (`refused`, `reset`, `timeout`, ...)."""
        return str(self.status) if self.status else self.error


class GuestLoad:
    """The load generator running in one guest namespace."""

    def __init__(
        self,
        namespace: str,
        *,
        rate: float,
        connections: int,
        duration: float,
        timeout: float = 20.0,
        paths: Sequence[str] = ("/latest/meta-data/instance-id",),
        records: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.namespace = namespace
        self.duration = duration
        self.timeout = timeout
        argv = [
            "ip", "netns", "exec", namespace, python, str(script("load")),
            "--rate", str(rate), "--connections", str(connections),
            "--duration", str(duration), "--timeout", str(timeout),
        ]  # fmt: skip
        for path in paths:
            argv += ["--path", path]
        if records:
            argv.append("--records")
        self.argv = argv
        self.records: list[Record] = []
        self.summary: dict[str, Any] | None = None
        self.stderr = ""
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> GuestLoad:
        """Start the generator (`ip netns exec` execs it: the PID is the generator's)."""
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,))
        self._reader.start()
        return self

    @property
    def pid(self) -> int | None:
        """The generator's PID once started."""
        return self._process.pid if self._process is not None else None

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("["):
                started, seconds, status, error = json.loads(line)
                record = Record(self.namespace, started, seconds, status, error)
                with self._lock:
                    self.records.append(record)
            elif line.startswith("{"):
                self.summary = json.loads(line)["summary"]

    def snapshot(self) -> list[Record]:
        """The records so far."""
        with self._lock:
            return list(self.records)

    def running(self) -> bool:
        """True while the generator runs."""
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the generator to finish its duration; its summary."""
        process = self._require()
        limit = timeout if timeout is not None else self.duration + self.timeout + 30
        try:
            process.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._close()
        if self.summary is None:
            raise RuntimeError(
                f"load in {self.namespace} exited with {process.returncode} and no summary: "
                f"{self.stderr[-2000:]}"
            )
        return self.summary

    def stop(self) -> dict[str, Any] | None:
        """SIGTERM (requests in flight end within the timeout), SIGKILL after that; the
        summary, if the generator printed one."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(self.timeout + 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self._close()
        return self.summary

    def _close(self) -> None:
        process = self._require()
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None
        if process.stderr is not None and not process.stderr.closed:
            self.stderr = process.stderr.read().decode("utf-8", "replace")
            process.stderr.close()
        if process.stdout is not None:
            process.stdout.close()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the load was not started")
        return self._process


def merge_summaries(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several guests: counts added, percentiles from the merged histogram."""
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    histogram: Counter[int] = Counter()
    requests = late = 0
    seconds = rate = slowest = 0.0
    for summary in summaries:
        requests += summary["requests"]
        late += summary["late"]
        rate += summary["rate"]
        seconds = max(seconds, summary["seconds"])
        slowest = max(slowest, summary["max_ms"])
        statuses.update(summary["statuses"])
        errors.update(summary["errors"])
        histogram.update({int(k): v for k, v in summary["histogram"].items()})
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": round(rate, 1),
        "ok": statuses.get(str(OK), 0),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(sorted(errors.items())),
        "late": late,
        "p50_ms": round(percentile(dict(histogram), 0.50) * 1e3, 3),
        "p99_ms": round(percentile(dict(histogram), 0.99) * 1e3, 3),
        "max_ms": slowest,
    }


def open_fds(pid: int) -> int | None:
    """How many file descriptors a process holds (entries of /proc/PID/fd); None if gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> float | None:
    """Poll until `predicate()` is true; seconds it took, or None after `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(step)
