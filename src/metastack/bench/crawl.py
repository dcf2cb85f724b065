"""The boot-storm load: cloud-init's OpenStack then EC2 crawl from inside every guest namespace."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import select
import socket
import time
from collections.abc import Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from metastack.netns.sockets import _setns, netns_path, return_to

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
# Sockets made per entry into a guest namespace (a crawl makes dozens, one at a time).
SOCKETS_PER_VISIT = 8


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

    Times are time.perf_counter().
    """

    index: int
    netns: str | None
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


class _Ready:
    """Awaited by a crawl to park until `fd` is ready for `events` (epoll bits); past
    `deadline` (perf counter) the wait ends in TimeoutError."""

    __slots__ = ("deadline", "events", "fd")

    def __init__(self, fd: int, events: int, deadline: float) -> None:
        self.fd = fd
        self.events = events
        self.deadline = deadline

    def __await__(self) -> Generator[_Ready, None, None]:
        yield self


class Driver:
    """A minimal event loop for the crawls: epoll, coroutines and per-wait deadlines.

    The load generator shares the two cores with the chain it measures, so it must cost
    as little per request as it can: no futures, handles or timers per request, one
    epoll registration per connection (re-armed, never removed: close() drops it).
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, tuple[Coroutine[_Ready, None, None], float]] = {}
        self._armed: set[int] = set()
        self.running = 0

    def close(self) -> None:
        """Close the epoll descriptor."""
        self._epoll.close()

    def forget(self, fd: int) -> None:
        """`fd` is about to be closed: its number may come back for another socket."""
        self._armed.discard(fd)

    def start(self, coro: Coroutine[_Ready, None, None]) -> None:
        """Run a crawl until its first wait."""
        self.running += 1
        self._step(coro, None)

    def _step(self, coro: Coroutine[_Ready, None, None], error: BaseException | None) -> None:
        try:
            ready = coro.throw(error) if error is not None else coro.send(None)
        except StopIteration:
            self.running -= 1
            return
        fd = ready.fd
        events = ready.events | select.EPOLLONESHOT
        if fd in self._armed:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
            self._armed.add(fd)
        self._parked[fd] = (coro, ready.deadline)

    def run(self, until: float) -> None:
        """Resume crawls as their sockets get ready, until all ended or `until` (perf
        counter) passed; a wait past its deadline gets TimeoutError thrown in."""
        poll = self._epoll.poll
        parked = self._parked
        next_sweep = time.perf_counter() + 0.05
        while self.running:
            for fd, _ in poll(0.05):
                coro, _ = parked.pop(fd)
                self._step(coro, None)
            now = time.perf_counter()
            if now >= until:
                return
            if now >= next_sweep:
                next_sweep = now + 0.05
                for fd, (coro, deadline) in list(parked.items()):
                    if deadline <= now:
                        del parked[fd]
                        self._step(coro, TimeoutError())

    def cancel_all(self) -> None:
        """Close every parked crawl (an unfinished storm)."""
        for coro, _ in self._parked.values():
            coro.close()
        self._parked.clear()


class Crawler:
    """Drives every guest's crawl from one :class:`Driver`; sockets are made inside guests."""

    def __init__(self, timeout: float = 10.0, target: tuple[str, int] = METADATA) -> None:
        self.timeout = timeout
        self.target = target
        self.driver = Driver()
        self._origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._fds: dict[str, int] = {}
        # Sockets made ahead in each guest namespace, not yet used.
        self._spare: dict[str, list[socket.socket]] = {}

    def close(self) -> None:
        """Close the namespace file descriptors, unused sockets and the driver."""
        for fd in [self._origin, *self._fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for spare in self._spare.values():
            for sock in spare:
                sock.close()
        self._spare.clear()
        self.driver.close()

    def open(self, netns: str) -> None:
        """Hold a guest namespace open, so each socket costs two setns calls only."""
        self._fds[netns] = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)

    def _socket(self, netns: str | None) -> socket.socket:
        if netns is None:  # the caller's own namespace (tests)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            return sock
        spare = self._spare.setdefault(netns, [])
        if not spare:
            # setns switches this thread only; nothing else runs on it until we switch
            # back. A few sockets per visit: the two setns calls are most of the cost.
            _setns(self._fds[netns])
            try:
                for _ in range(SOCKETS_PER_VISIT):
                    spare.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                return_to(self._origin, netns)
        sock = spare.pop()
        sock.setblocking(False)
        return sock

    async def _exchange(self, sock: socket.socket, path: str, deadline: float) -> tuple[int, bytes]:
        fd = sock.fileno()
        code = sock.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        data = REQUEST.format(path=path).encode()
        while data:
            try:
                # Through veth the handshake is usually over before connect_ex returns:
                # send at once, and wait for the connection only when it is not.
                sent = sock.send(data)
            except BlockingIOError:
                await _Ready(fd, select.EPOLLOUT, deadline)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code)) from None
                continue
            data = data[sent:]
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            await _Ready(fd, select.EPOLLIN, deadline)
            chunk = sock.recv(65536)
            if not chunk:
                raise RequestFailed("closed before the response" if not buffer else "short head")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        status, length, chunked = _body_length(head)
        while True:
            if chunked:
                done = _dechunk(body)
                if done is not None:
                    return status, done
            elif length is not None and len(body) >= length:
                return status, body[:length]
            await _Ready(fd, select.EPOLLIN, deadline)
            chunk = sock.recv(65536)
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
                status, body = await self._exchange(sock, path, start + self.timeout)
            finally:
                self.driver.forget(sock.fileno())
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

    async def boot(self, guest: Guest) -> None:
        """Crawl as cloud-init does: OpenStack, then EC2."""
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


def run_storm(
    netns: Sequence[str | None],
    timeout: float = 10.0,
    deadline: float = 300.0,
    target: tuple[str, int] = METADATA,
) -> Storm:
    """Let every guest in `netns` (index = position; None: this namespace) crawl at once."""
    crawler = Crawler(timeout, target)
    try:
        for name in netns:
            if name is not None:
                crawler.open(name)
        guests = [Guest(i, name) for i, name in enumerate(netns)]
        # The generator is the measuring instrument: a full collection over tens of
        # thousands of samples would pause it and show up as latency of the chain.
        gc.collect()
        gc.disable()
        wall, started = time.time(), time.perf_counter()
        for guest in guests:
            crawler.driver.start(crawler.boot(guest))
        crawler.driver.run(started + deadline)
        crawler.driver.cancel_all()
        return Storm(guests, started, time.perf_counter(), wall)
    finally:
        gc.enable()
        crawler.close()
