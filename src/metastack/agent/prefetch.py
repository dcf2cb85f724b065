"""Port lookups fetched before the guests ask: a network's instance ports, once its
changes settle.

Instances are created seconds before they boot, and every one of them then asks at
once. When the change feed reports port changes on a network, the agent waits until the
network has been quiet for `quiet` seconds, then fetches all its ports in one call and
caches the identity behind every address, exactly as a lookup would: with a ticket taken
before the call, so a change that lands meanwhile voids the answer (see cache.py).

Which networks: ``seen`` prefetches only networks this agent has answered for (an agent
that serves a few of a large cloud's networks); ``all`` every network the feed names
(one node, or a small site), ``off`` none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal

from metastack.agent.cache import Change, LookupCache
from metastack.agent.control import ControlClient
from metastack.agent.resolve import identities_by_network
from metastack.errors import UpstreamUnavailable
from metastack.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PrefetchMode = Literal["off", "seen", "all"]
# Networks fetched in one control API call.
NETWORKS_PER_CALL = 20
# How long a network stays "seen" after a guest on it was answered.
SEEN_SECONDS = 3600.0


class Prefetcher:
    """Collects networks with changes from the feed and fills the cache for them."""

    def __init__(
        self,
        control: ControlClient,
        cache: LookupCache,
        mode: PrefetchMode,
        *,
        quiet: float = 0.3,
        longest_wait: float = 5.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        self._cache = cache
        self.mode = mode
        self._quiet = quiet
        self._longest_wait = longest_wait
        self._timeout = timeout
        self._clock = clock
        self._changed: dict[str, float] = {}  # network -> when its last change was applied
        self._first: dict[str, float] = {}  # network -> its oldest change not fetched yet
        self._seen: dict[str, float] = {}  # network -> when a guest on it was last answered
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fetched = 0  # addresses cached, for tests and logs

    def served(self, networks: Iterable[str]) -> None:
        """A guest on these networks was answered (what ``seen`` prefetches)."""
        if self.mode == "seen":
            now = self._clock()
            for network in networks:
                self._seen[network] = now

    def note(self, changes: Iterable[Change]) -> None:
        """Feed changes just applied to the cache: remember the networks they touch."""
        if self.mode == "off":
            return
        now = self._clock()
        for change in changes:
            network = change.network_id
            if change.resource not in ("port", "subnet") or not network:
                continue
            if self.mode == "all" or self._is_seen(network, now):
                self._changed[network] = now
                self._first.setdefault(network, now)
                self._wake.set()

    def _is_seen(self, network: str, now: float) -> bool:
        seen = self._seen.get(network)
        if seen is None:
            return False
        if now - seen > SEEN_SECONDS:
            del self._seen[network]
            return False
        return True

    def due(self) -> list[str]:
        """Networks quiet for long enough (or changing for longer than `longest_wait`, so a
        busy network is still fetched), taken off the list."""
        now = self._clock()
        ready = [
            net
            for net, at in self._changed.items()
            if now - at >= self._quiet or now - self._first[net] >= self._longest_wait
        ]
        for network in ready:
            del self._changed[network]
            del self._first[network]
        return ready

    async def fetch(self, networks: list[str]) -> None:
        """One control API call for `networks`; their addresses go into the cache."""
        ticket = self._cache.ticket()
        deadline = asyncio.get_running_loop().time() + self._timeout
        ports = await self._control.find_ports(networks, deadline=deadline)
        now = self._clock()
        for network, answers in identities_by_network(ports, networks).items():
            for address, found in answers.items():
                key = ((network,), "ip_address", address)
                if self._cache.store_port(key, found, ticket, now):
                    self.fetched += 1

    async def run(self) -> None:
        """Until cancelled: fetch networks as they become quiet."""
        if self.mode == "off":
            return
        while True:
            if not self._changed:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self._quiet)
            due = self.due()
            for start in range(0, len(due), NETWORKS_PER_CALL):
                batch = due[start : start + NETWORKS_PER_CALL]
                try:
                    await self.fetch(batch)
                except UpstreamUnavailable as exc:
                    # Nothing lost: the guests' own lookups still work, one by one.
                    log.warning("prefetching ports of %d networks failed: %s", len(batch), exc)

    def start(self) -> None:
        """Run :meth:`run` in the background (nothing when the mode is off)."""
        if self.mode != "off" and self._task is None:
            self._task = asyncio.create_task(self.run())

    @property
    def running(self) -> bool:
        """Whether the background task is alive (a failed fetch must not end it)."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Stop the background task started by :meth:`start`."""
        await cancel_and_wait(self._task)
        self._task = None
