"""Several equivalent endpoints (metadata APIs, control APIs): which one takes the next
request, and which are down, found by active probes rather than by requests that hang.

A member is marked down when a probe gets no answer within `timeout` (a powered-off node
sends no reset: without probes, connects and pooled connections would wait out their own
timeouts), or when a connection to it is refused; it is taken back as soon as a probe gets
any HTTP answer. A request goes to the member with the fewest requests outstanding among
those that are up, ties in turn (round robin while all are idle); when every member is
down, they are all tried anyway: probes never make things worse than trying.

This layer knows nothing of requests: callers say what a probe is and what marking a
member down should cut short (see :func:`http_upstreams` for the http11 pools).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Any, Generic, TypeVar

from metastack.errors import UpstreamUnavailable
from metastack.http11.client import Pool, UpstreamTimeout, encode_request
from metastack.http11.endpoint import Endpoint
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A probe every PROBE_INTERVAL seconds per member, each given PROBE_TIMEOUT to answer:
# a member that stops answering is down within PROBE_INTERVAL + PROBE_TIMEOUT.
PROBE_INTERVAL = 0.25
PROBE_TIMEOUT = 0.5

T = TypeVar("T")
R = TypeVar("R")
# One health check: returns once the member answered; raises if it did not in time.
Probe = Callable[[float], Awaitable[object]]


class Member(Generic[T]):
    """One endpoint: its name (a URL), what callers send through (`target`), its health and
    how many requests it holds."""

    __slots__ = ("_down", "index", "name", "outstanding", "probe", "target", "up")

    def __init__(self, name: str, target: T, probe: Probe | None = None) -> None:
        self.name = name
        self.target = target
        self.probe = probe
        self.up = True
        # Requests given to this member and not finished; callers keep it.
        self.outstanding = 0
        self.index = 0
        self._down: asyncio.Future[None] | None = None

    def went_down(self) -> asyncio.Future[None]:
        """A future that completes when this member is next marked down."""
        if self._down is None or self._down.done():
            self._down = asyncio.get_running_loop().create_future()
        return self._down

    def __repr__(self) -> str:
        return f"<{self.name} {'up' if self.up else 'down'}, {self.outstanding} outstanding>"


class Upstreams(Generic[T]):
    """The members, their health (probed in the background once :meth:`start`ed, when
    there are at least two) and the choice of the next one."""

    def __init__(
        self,
        members: Sequence[Member[T]],
        *,
        what: str,
        on_down: Callable[[Member[T], str], None] | None = None,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        if not members:
            raise ValueError(f"at least one {what} endpoint is required")
        self.members = tuple(members)
        for index, member in enumerate(self.members):
            member.index = index
        self.what = what
        self.interval = interval
        self.timeout = timeout
        self._on_down = on_down
        self._turn = 0
        self._probes: list[asyncio.Task[None]] = []

    def pick(self, tried: Container[Member[T]] = ()) -> Member[T] | None:
        """The member for the next attempt, or None once every member was `tried`: up before
        down, then fewest outstanding, ties in turn."""
        members = self.members
        count = len(members)
        best: Member[T] | None = None
        for step in range(count):
            member = members[(self._turn + step) % count]
            if member in tried:
                continue
            if (
                best is None
                or (member.up and not best.up)
                or (member.up == best.up and member.outstanding < best.outstanding)
            ):
                best = member
        if best is not None:
            self._turn = (best.index + 1) % count
        return best

    def mark_down(self, member: Member[T], reason: str) -> None:
        """Take a member out of the choice until a probe gets an answer from it again, and
        cut short what `on_down` says (requests waiting on it, idle connections)."""
        if not member.up:
            return
        member.up = False
        log.warning("%s %s is down: %s", self.what, member.name, reason)
        if member._down is not None and not member._down.done():
            member._down.set_result(None)
        if self._on_down is not None:
            self._on_down(member, reason)

    def mark_up(self, member: Member[T]) -> None:
        """Give a member requests again."""
        if not member.up:
            member.up = True
            log.warning("%s %s answers again", self.what, member.name)

    def refused(self, member: Member[T], exc: BaseException) -> None:
        """A connection to the member could not be opened: down at once (while probes run,
        which will take it back; with a single member there is nothing else to choose)."""
        if self._probes:
            self.mark_down(member, f"connect failed: {exc}")

    def start(self) -> None:
        """Probe every member in the background (with two or more; one has no alternative)."""
        if len(self.members) > 1 and not self._probes:
            self._probes = [
                asyncio.create_task(self._watch(member), name=f"probe {member.name}")
                for member in self.members
                if member.probe is not None
            ]

    async def close(self) -> None:
        """Stop probing."""
        probes, self._probes = self._probes, []
        await cancel_and_wait(*probes)

    async def _watch(self, member: Member[T]) -> None:
        assert member.probe is not None
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                async with asyncio.timeout(self.timeout):
                    await member.probe(self.timeout)
            except (TimeoutError, UpstreamTimeout):
                self.mark_down(member, f"no answer to a probe in {self.timeout:g} s")
            except (UpstreamUnavailable, OSError) as exc:
                self.mark_down(member, f"probe failed: {exc}")
            else:
                self.mark_up(member)
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - began)))


class MemberDown(UpstreamUnavailable):
    """The member was marked down while a request to it waited for its answer."""


async def unless_down(member: Member[Any], call: Awaitable[R]) -> R:
    """Await `call`, cancelling it if `member` is marked down first (MemberDown): for
    clients that cannot cut their own connections short (aiohttp)."""
    task = asyncio.ensure_future(call)
    down = member.went_down()
    try:
        await asyncio.wait((task, down), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        return task.result()
    raise MemberDown(f"{member.name} is down")


class HttpProbe:
    """One request (`HEAD /` by default) over its own keep-alive connection: any complete
    HTTP answer, whatever its status, means the member is alive."""

    def __init__(
        self,
        endpoint: Endpoint,
        path: bytes = b"/",
        *,
        method: bytes = b"HEAD",
        headers: Sequence[tuple[bytes, bytes]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = Pool(
            endpoint, connect_timeout=PROBE_TIMEOUT, pool_size=1, ssl_context=ssl_context
        )
        head = [(b"Host", endpoint.host), *headers]
        self._data = encode_request(method, endpoint.base_path + path, head)
        self._is_head = method == b"HEAD"

    async def __call__(self, timeout: float) -> object:
        return await self._pool.request(
            self._data, timeout=timeout, retry=False, is_head=self._is_head, queued=False
        )

    async def close(self) -> None:
        """Close the probe's connection."""
        await self._pool.close()


def abandon_pool(member: Member[Pool], reason: str) -> None:
    """`on_down` for http11 pools: see :meth:`Pool.abandon`."""
    count = member.target.abandon(reason)
    if count:
        log.warning("%s: %d requests in flight cut short", member.name, count)


def http_upstreams(
    urls: Sequence[str],
    make_pool: Callable[[Endpoint], Pool],
    *,
    what: str,
    probe_path: bytes = b"/",
    probe_headers: Sequence[tuple[bytes, bytes]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> Upstreams[Pool]:
    """One http11 pool per base URL, probed with `HEAD probe_path`; a member marked down has
    its pool abandoned. ValueError for a URL that is not http(s)."""
    members: list[Member[Pool]] = []
    for url in urls:
        endpoint = Endpoint.from_url(url)
        probe = HttpProbe(endpoint, probe_path, headers=probe_headers, ssl_context=ssl_context)
        members.append(Member(url, make_pool(endpoint), probe))
    return Upstreams(members, what=what, on_down=abandon_pool)


async def close_http_upstreams(upstreams: Upstreams[Pool]) -> None:
    """Stop probing; close every pool's and every probe's connections."""
    await upstreams.close()
    for member in upstreams.members:
        await member.target.close()
        if isinstance(member.probe, HttpProbe):
            await member.probe.close()
