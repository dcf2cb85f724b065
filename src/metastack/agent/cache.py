"""Lookup cache that follows the change feed and never serves an identity a change revoked.

Every invalidation bumps a local sequence number and stamps the touched *subjects*
(a network, an instance, a project, a router, a router's interface port) with it. A
lookup takes a *ticket* (the sequence number) before it asks the control API; its
result is valid only while no subject it depends on carries a newer stamp than the
ticket. The same rule, checked on insert and on read, covers both the plain case
(entry cached, then a change) and the race (lookup started, change applied, lookup
answers with pre-change data): the late answer is refused. A resync raises a floor
that every ticket must reach, which drops everything at once.

The cache is only trusted while the feed is live (:meth:`LookupCache.set_live`);
otherwise reads miss and inserts are ignored, so a silent feed costs lookups, never
correctness. The module is pure: time comes in as an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from metastack.client.feed import Change

__all__ = ["Change", "Identity", "LookupCache", "PortKey", "subjects_of"]

Subject = tuple[str, str]  # (kind, id): ("network", N), ("instance", I), ...
V = TypeVar("V")

# Stamps are kept at least this long past an entry's TTL, and at most this many.
MAX_STAMPS = 65536


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a guest is: the instance behind its port and that port's project."""

    instance_id: str
    project_id: str


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    ticket: int
    subjects: tuple[Subject, ...]
    stored_at: float


class _Table(Generic[V]):
    """Bounded LRU of entries with TTL; validity is decided by the owning cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[object, _Entry[V]] = OrderedDict()

    def put(self, key: object, entry: _Entry[V]) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class LookupCache:
    """Port lookups and router network lists, invalidated by the change feed."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.seq = 0
        self.floor = 0
        self.live = False
        self.stats = {"hits": 0, "misses": 0, "refused": 0, "resyncs": 0}
        self._stamps: OrderedDict[Subject, tuple[int, float]] = OrderedDict()
        self.ports: _Table[Identity | None] = _Table(size)
        self.routers: _Table[tuple[str, ...]] = _Table(max(1, size // 4))

    @property
    def enabled(self) -> bool:
        """False when the cache is configured off (TTL 0)."""
        return self.ttl > 0

    def ticket(self) -> int:
        """Take before asking the control API; hand back to :meth:`store_*`."""
        return self.seq

    def set_live(self, live: bool, now: float) -> None:
        """The feed is (not) being followed; going dark drops everything."""
        if self.live and not live:
            self.resync(now)
        self.live = live

    def resync(self, now: float) -> None:
        """Forget all entries and refuse every lookup that started before now."""
        self.seq += 1
        self.floor = self.seq
        self._stamps.clear()
        self.ports.entries.clear()
        self.routers.entries.clear()
        self.stats["resyncs"] += 1

    def invalidate(self, subjects: Iterable[Subject], now: float) -> None:
        """Stamp subjects: cached results depending on them, and lookups in flight, are void."""
        self.seq += 1
        for subject in subjects:
            self._stamps[subject] = (self.seq, now)
            self._stamps.move_to_end(subject)
        self._prune(now)

    def apply(self, changes: Iterable[Change], now: float) -> None:
        """Invalidate what a batch of feed changes touches."""
        subjects: list[Subject] = []
        for change in changes:
            touched = subjects_of(change)
            if touched is None:
                self.resync(now)
                return
            subjects.extend(touched)
        if subjects:
            self.invalidate(subjects, now)

    def _prune(self, now: float) -> None:
        # A stamp older than the TTL can only void entries that have expired anyway;
        # dropping it raises the floor so no ticket from before it can come back.
        horizon = now - self.ttl
        while self._stamps:
            subject, (seq, stamped_at) = next(iter(self._stamps.items()))
            if stamped_at >= horizon and len(self._stamps) <= MAX_STAMPS:
                break
            del self._stamps[subject]
            self.floor = max(self.floor, seq)

    def _valid(self, ticket: int, subjects: Iterable[Subject]) -> bool:
        if ticket < self.floor:
            return False
        for subject in subjects:
            stamp = self._stamps.get(subject)
            if stamp is not None and stamp[0] > ticket:
                return False
        return True

    def _get(self, table: _Table[V], key: object, now: float) -> _Entry[V] | None:
        if not self.live or not self.enabled:
            return None
        entry = table.entries.get(key)
        if entry is None:
            self.stats["misses"] += 1
            return None
        if now - entry.stored_at > self.ttl or not self._valid(entry.ticket, entry.subjects):
            del table.entries[key]
            self.stats["misses"] += 1
            return None
        table.entries.move_to_end(key)
        self.stats["hits"] += 1
        return entry

    def _put(
        self,
        table: _Table[V],
        key: object,
        value: V,
        ticket: int,
        subjects: tuple[Subject, ...],
        now: float,
    ) -> bool:
        if not self.live or not self.enabled:
            return False
        if not self._valid(ticket, subjects):
            self.stats["refused"] += 1
            return False
        table.put(key, _Entry(value, ticket, subjects, now))
        return True

    def get_port(self, key: PortKey, now: float) -> tuple[Identity | None] | None:
        """A cached lookup result wrapped in a 1-tuple (None inside = known absent), or None."""
        entry = self._get(self.ports, key, now)
        return None if entry is None else (entry.value,)

    def store_port(self, key: PortKey, found: Identity | None, ticket: int, now: float) -> bool:
        """Cache a lookup that started at `ticket`, unless a change has voided it since."""
        subjects = [("network", network) for network in key[0]]
        if found is not None:
            subjects += [("instance", found.instance_id), ("project", found.project_id)]
        return self._put(self.ports, key, found, ticket, tuple(subjects), now)

    def get_router(self, router_id: str, now: float) -> tuple[str, ...] | None:
        """The cached network ids behind a router's interfaces."""
        entry = self._get(self.routers, router_id, now)
        return None if entry is None else entry.value

    def store_router(
        self,
        router_id: str,
        networks: tuple[str, ...],
        interface_ports: Iterable[str],
        ticket: int,
        now: float,
    ) -> bool:
        """Cache a router's networks; void when the router or an interface port changes."""
        subjects = (("router", router_id), *(("port", port) for port in interface_ports))
        return self._put(self.routers, router_id, networks, ticket, subjects, now)


# (sorted network ids, "ip_address" | "mac_address", value)
PortKey = tuple[tuple[str, ...], str, str]


def subjects_of(change: Change) -> list[Subject] | None:
    """What a change voids; None when it cannot be narrowed (then everything goes)."""
    subjects: list[Subject] = []
    if change.network_id:
        subjects.append(("network", change.network_id))
    if change.instance_id:
        subjects.append(("instance", change.instance_id))
    if change.resource == "port":
        if not change.network_id:
            return None
        subjects.append(("port", change.resource_id))
    elif change.resource == "network":
        subjects.append(("network", change.resource_id))
    elif change.resource == "subnet":
        if not change.network_id:
            return None
    elif change.resource == "router":
        subjects.append(("router", change.resource_id))
    elif change.resource == "instance":
        subjects.append(("instance", change.resource_id))
    elif change.resource == "project":
        subjects.append(("project", change.resource_id))
    else:
        return None
    return subjects
