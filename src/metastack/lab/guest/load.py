"""Steady HTTP load from inside a guest namespace: a fixed request rate, every request timed.

Run inside the guest (`ip netns exec NS PYTHON load.py --rate 100 ...`); it imports nothing
from metastack and uses uvloop when the interpreter has it. `--connections` keep-alive
connections share one schedule: request i is due at start + i / rate (an open loop, as
wrk2 does), so a slow answer delays no other connection's requests, and the summary's
latencies count from the due time (a late start is part of the latency). A connection
that fails is closed and opened again for its next request.

With `--records`, each finished request is printed at once as a JSON list
`[started, seconds, status, error]` (`started` on CLOCK_MONOTONIC, which every process of
the machine shares; status 0 with an error kind when there was no HTTP answer: `refused`,
`reset`, `timeout`, `other:<exception>`). The last line is always
`{"summary": {...}}`: counts per status and error, latency percentiles and a histogram
that summaries of other guests can be merged with. SIGTERM or SIGINT stops the load early
(requests in flight finish, bounded by `--timeout`), then the summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BUCKETS_PER_E = 50  # histogram resolution: about 2 % per bucket
MAX_HEAD = 65536


def bucket_of(seconds: float) -> int:
    """Histogram bucket of a latency (microsecond scale, logarithmic)."""
    return int(math.log(max(seconds * 1e6, 1.0)) * BUCKETS_PER_E)


def bucket_seconds(bucket: int) -> float:
    """The upper latency bound of a bucket, in seconds."""
    return math.exp((bucket + 1) / BUCKETS_PER_E) / 1e6


def percentile(histogram: dict[int, int], fraction: float) -> float:
    """The latency (seconds) below which `fraction` of the histogram's requests finished."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    wanted = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= wanted:
            return bucket_seconds(bucket)
    return bucket_seconds(max(histogram))


class Failed(Exception):
    """No HTTP answer; the message is the error kind."""


@dataclass
class Stats:
    """What the load saw: per-status and per-error counts, latencies as a histogram."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    histogram: Counter[int] = field(default_factory=Counter)
    late: int = 0
    slowest: float = 0.0
    slowest_failure: float = 0.0

    def add(self, latency: float, status: int, error: str) -> None:
        """Count one finished request."""
        self.statuses[status] += 1
        if error:
            self.errors[error] += 1
        self.histogram[bucket_of(latency)] += 1
        self.slowest = max(self.slowest, latency)
        if status != 200:
            self.slowest_failure = max(self.slowest_failure, latency)

    def summary(self, elapsed: float) -> dict[str, Any]:
        """The JSON summary printed as the last line."""
        count = sum(self.statuses.values())
        return {
            "requests": count,
            "seconds": round(elapsed, 3),
            "rate": round(count / elapsed, 1) if elapsed > 0 else 0.0,
            "ok": self.statuses.get(200, 0),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "late": self.late,
            "p50_ms": round(percentile(self.histogram, 0.50) * 1e3, 3),
            "p99_ms": round(percentile(self.histogram, 0.99) * 1e3, 3),
            "max_ms": round(self.slowest * 1e3, 3),
            "slowest_failure_ms": round(self.slowest_failure * 1e3, 3),
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
        }


class Connection:
    """One keep-alive HTTP/1.1 connection, opened on first use and after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """GET `path`; the status code. Failed (with the error kind) when no answer came."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: */*\r\n\r\n"
            self.writer.write(request.encode())
            head = await self.reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _parse_head(head)
            if chunked:
                await _read_chunked(self.reader)
            elif length:
                await self.reader.readexactly(length)
            if close:
                await self.close()
            return status
        except ConnectionRefusedError:
            await self.close()
            raise Failed("refused") from None
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self.close()
            raise Failed("reset") from None
        except (OSError, ValueError) as exc:
            await self.close()
            raise Failed(f"other:{type(exc).__name__}") from None

    async def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, int, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, chunked, close = 0, False, parts[0] == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            close = "close" in value
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from our servers
            return
        await reader.readexactly(size + 2)


@dataclass
class Load:
    """The schedule and the counters shared by every connection's task."""

    host: str
    port: int
    paths: Sequence[str]
    rate: float
    duration: float
    timeout: float
    records: bool
    stats: Stats = field(default_factory=Stats)
    next_index: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run_connection(self, start: float) -> None:
        """Take due requests off the schedule and send them until the duration is over."""
        loop = asyncio.get_running_loop()
        connection = Connection(self.host, self.port)
        try:
            while not self.stop.is_set():
                index = self.next_index
                self.next_index += 1
                due = start + index / self.rate
                if due - start >= self.duration:
                    return
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.001:
                    self.stats.late += 1
                if self.stop.is_set():
                    return
                await self.one(connection, self.paths[index % len(self.paths)], due)
        finally:
            await connection.close()

    async def one(self, connection: Connection, path: str, due: float) -> None:
        """Send one request; count it and print its record."""
        # uvloop's clock counts milliseconds: time requests on the system's monotonic clock.
        began = time.monotonic()
        lag = max(0.0, asyncio.get_running_loop().time() - due)
        status, error = 0, ""
        try:
            async with asyncio.timeout(self.timeout):
                status = await connection.get(path)
        except Failed as exc:
            error = str(exc)
        except TimeoutError:
            error = "timeout"
            await connection.close()
        took = time.monotonic() - began
        self.stats.add(took + lag, status, error)
        if self.records:
            line = json.dumps([round(began, 6), round(took, 6), status, error])
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load; the summary."""
    loop = asyncio.get_running_loop()
    load = Load(
        host=args.host,
        port=args.port,
        paths=args.path or ["/latest/meta-data/instance-id"],
        rate=args.rate,
        duration=args.duration,
        timeout=args.timeout,
        records=args.records,
    )

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, load.stop.set)
    start = loop.time()
    tasks = [asyncio.create_task(load.run_connection(start)) for _ in range(args.connections)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return load.stats.summary(loop.time() - start)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line of the load generator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="169.254.169.254")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--path", action="append", help="paths taken in turn (repeatable)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (upper bound)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    parser.add_argument("--records", action="store_true", help="print every request")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.connections < 1 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--rate, --duration and --timeout must be > 0, --connections >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the load, print the summary line."""
    args = parse_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        summary = runner.run(main_async(args))
    sys.stdout.write(json.dumps({"summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
