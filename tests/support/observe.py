"""Helpers for observability tests: scrape and parse /metrics, read health, receive sd_notify."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

METRICS_RE = re.compile(r"metrics listening on ([\d.]+):(\d+)")


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET `url` on a new connection; (status, body), errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `base`/metrics, parsed by prometheus-client's own parser:
    (sample name, sorted labels) -> value."""
    status, body = get(base + "/metrics")
    assert status == 200, body
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 when it is absent (a labelled child not yet counted)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metrics_url(log: Path, timeout: float = 30.0) -> str:
    """The metrics listener a service logged (`metrics listening on HOST:PORT`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = METRICS_RE.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return f"http://{found.group(1)}:{found.group(2)}"
        assert time.monotonic() < deadline, f"no metrics listener logged in {log}"
        time.sleep(0.05)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `predicate()`; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true after {timeout} s: {what}"
        time.sleep(0.05)


class NotifySocket:
    """A NOTIFY_SOCKET of our own: datagrams with the sender's PID (SO_PASSCRED)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.received: list[tuple[int, str]] = []

    def receive(self, timeout: float) -> tuple[int, str] | None:
        """The next (pid, message), or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        item = (pid, data.decode())
        self.received.append(item)
        return item

    def wait_for(self, message: str, timeout: float) -> tuple[int, str]:
        """Receive until `message` arrives; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {message!r} in {timeout} s; got {self.received}"
            item = self.receive(left)
            if item is not None and item[1] == message:
                return item

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.contextmanager
def notify_socket(path: Path) -> Iterator[NotifySocket]:
    """A NotifySocket at `path`, closed and removed at the end."""
    listener = NotifySocket(path)
    try:
        yield listener
    finally:
        listener.close()
