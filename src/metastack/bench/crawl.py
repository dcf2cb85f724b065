"""The boot-storm load: cloud-init's OpenStack then EC2 crawl from inside every guest namespace."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from metastack.netns.sockets import _setns, netns_path

METADATA = ("169.254.169.254", 80)
# What python-requests (cloud-init's HTTP client) sends; a new connection per request.
REQUEST = (
    "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/22.4.2\r\n"
    "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
)
# cloud-init's openstack.OS_VERSIONS, newest first.
OS_VERSIONS = (
    "2018-08-27",
    "2017-02-22",
    "2016-10-06",
    "2016-06-30",
    "2015-10-15",
    "2013-10-17",
    "2013-04-04",
    "2012-08-10",
)
OS_DOCS = ("meta_data.json", "user_data", "vendor_data.json", "vendor_data2.json")
EC2_MIN_VERSION = "2009-04-04"
EC2_PROBES = ("2021-03-23", "2018-09-24", "2016-09-02")


class RequestFailed(Exception):
    """A request got no complete HTTP answer; the message is the error kind."""


@dataclass(slots=True)
class Sample:
    """One request: which guest, step and path, when (perf_counter), status, error kind."""

    guest: int
    step: str
    path: str
    start: float
    end: float
    status: int
    error: str


@dataclass
class Guest:
    """A guest that crawls: its index and namespace; what it requested and when it ended.

    Times are time.perf_counter() (uvloop's loop clock has a cached millisecond tick).
    """

    index: int
    netns: str
    samples: list[Sample] = field(default_factory=list)
    done_at: float = 0.0

    @property
    def paths(self) -> list[str]:
        """Every path requested, in order."""
        return [s.path for s in self.samples]

    @property
    def failed(self) -> int:
        """Requests that ended in an error."""
        return sum(1 for s in self.samples if s.error)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, RequestFailed):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def _body_length(head: bytes) -> tuple[int, int | None, bool]:
    """(status, content-length or None, chunked) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise RequestFailed("bad status line")
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    return int(parts[1]), length, chunked


def _dechunk(data: bytes) -> bytes | None:
    """The body of a complete chunked message, None while incomplete."""
    body, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(body) if data.find(b"\r\n", end + 2) >= 0 else None
        if len(data) < end + 2 + size + 2:
            return None
        body += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


class Crawler:
    """Drives every guest's crawl from one event loop; sockets are made inside guests."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._fds: dict[str, int] = {}

    def close(self) -> None:
        """Close the namespace file descriptors."""
        for fd in [self._origin, *self._fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def open(self, netns: str) -> None:
        """Hold a guest namespace open, so each socket costs two setns calls only."""
        self._fds[netns] = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)

    def _socket(self, netns: str) -> socket.socket:
        # setns switches this thread only; nothing else runs on it until we switch back.
        _setns(self._fds[netns])
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            try:
                _setns(self._origin)
            except OSError as exc:
                os.write(2, f"fatal: cannot leave namespace {netns}: {exc}\n".encode())
                os._exit(70)
        sock.setblocking(False)
        return sock

    async def _exchange(self, sock: socket.socket, path: str) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, METADATA)
        await loop.sock_sendall(sock, REQUEST.format(path=path).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise RequestFailed("closed before the response" if not data else "short head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status, length, chunked = _body_length(head)
        while True:
            if chunked:
                done = _dechunk(body)
                if done is not None:
                    return status, done
            elif length is not None and len(body) >= length:
                return status, body[:length]
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                if length is None and not chunked:
                    return status, body
                raise RequestFailed("short body")
            body += chunk

    async def get(
        self, guest: Guest, step: str, path: str, ok: Sequence[int] = (200,)
    ) -> tuple[int, bytes]:
        """One GET on a new connection; recorded in the guest's samples. (0, b"") on error."""
        start = time.perf_counter()
        status, body, error = 0, b"", ""
        try:
            sock = self._socket(guest.netns)
            try:
                async with asyncio.timeout(self.timeout):
                    status, body = await self._exchange(sock, path)
            finally:
                sock.close()
        except (OSError, RequestFailed, ValueError) as exc:
            error = _error_kind(exc)
        if not error and status not in ok:
            error = f"http {status}"
        guest.samples.append(
            Sample(guest.index, step, path, start, time.perf_counter(), status, error)
        )
        return status, body

    async def ec2_tree(self, guest: Guest, step: str, url: str) -> None:
        """cloud-init's MetadataMaterializer: a listing, its directories first, then leaves."""
        status, body = await self.get(guest, step, url)
        if status != 200:
            return
        leaves: dict[str, str] = {}
        children: list[str] = []
        for raw in body.decode("utf-8", "replace").splitlines():
            item = raw.strip()
            name = item.rstrip("/") if item.endswith("/") else item
            if not item or not name or name == "security-credentials":
                continue
            if item.endswith("/"):
                if name not in children:
                    children.append(name)
                continue
            resource = name
            ident, sep, rest = item.partition("=")
            if sep and ident.lstrip("-").isdigit():
                resource, name = f"{int(ident)}/openssh-key", rest
            leaves[name] = resource
        for child in children:
            await self.ec2_tree(guest, step, _join(url, child) + "/")
        for resource in leaves.values():
            await self.get(guest, step, _join(url, resource))

    async def openstack(self, guest: Guest) -> None:
        """DataSourceOpenStack: wait probe, versions, the version's documents, EC2 sub-crawl."""
        await self.get(guest, "openstack-wait", "/openstack")
        status, body = await self.get(guest, "openstack-versions", "/openstack")
        listed = body.decode("utf-8", "replace").splitlines() if status == 200 else []
        version = next((v for v in OS_VERSIONS if v in listed), "latest")
        meta: object = {}
        for doc in (*OS_DOCS, "network_data.json"):
            status, body = await self.get(guest, "openstack-docs", f"/openstack/{version}/{doc}")
            if doc == "meta_data.json" and status == 200:
                with contextlib.suppress(ValueError):
                    meta = json.loads(body)
        if isinstance(meta, dict):
            items = [i for i in meta.get("files", []) if isinstance(i, dict) and "path" in i]
            if isinstance(meta.get("network_config"), dict):
                items.append(meta["network_config"])
            for item in items:
                pieces = [p for p in str(item.get("content_path", "")).split("/") if p]
                await self.get(guest, "openstack-files", _join("/openstack", *pieces))
        await self.ec2_tree(guest, "openstack-ec2-crawl", "/latest/meta-data/")

    async def ec2(self, guest: Guest) -> None:
        """DataSourceEc2 on a non-AWS guest (IMDSv1): readiness, version probes, the tree."""
        await self.get(guest, "ec2-wait", f"/{EC2_MIN_VERSION}/meta-data/instance-id")
        version = EC2_MIN_VERSION
        for probe in EC2_PROBES:
            status, _ = await self.get(
                guest, "ec2-version-probe", f"/{probe}/meta-data/instance-id", ok=(200, 404)
            )
            if status == 200:
                version = probe
                break
        await self.get(guest, "ec2-user-data", f"/{version}/user-data", ok=(200, 404))
        await self.ec2_tree(guest, "ec2-tree", f"/{version}/meta-data/")

    async def boot(self, guest: Guest, start: asyncio.Event) -> None:
        """Wait for the common start, then crawl as cloud-init does: OpenStack, then EC2."""
        await start.wait()
        await self.openstack(guest)
        await self.ec2(guest)
        guest.done_at = time.perf_counter()


def _join(base: str, *parts: str) -> str:
    """cloud-init's url_helper.combine_url on paths."""
    for part in parts:
        base = (base if base.endswith("/") else base + "/") + quote(part, safe="/:")
    return base


@dataclass
class Storm:
    """The outcome of one storm: every guest's requests, on the loop clock from `started`."""

    guests: list[Guest]
    started: float
    ended: float
    wall_clock_start: float


async def _storm(crawler: Crawler, guests: list[Guest], deadline: float) -> Storm:
    start = asyncio.Event()
    tasks = [asyncio.create_task(crawler.boot(guest, start)) for guest in guests]
    await asyncio.sleep(0.2)  # every task is parked on the event before anyone starts
    wall, started = time.time(), time.perf_counter()
    start.set()
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return Storm(guests, started, time.perf_counter(), wall)


def run_storm(netns: Sequence[str], timeout: float = 10.0, deadline: float = 300.0) -> Storm:
    """Let every guest in `netns` (index = position) crawl at the same moment."""
    crawler = Crawler(timeout)
    try:
        for name in netns:
            crawler.open(name)
        guests = [Guest(i, name) for i, name in enumerate(netns)]
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            return asyncio.run(_storm(crawler, guests, deadline))
        storm: Storm = uvloop.run(_storm(crawler, guests, deadline))
        return storm
    finally:
        crawler.close()
