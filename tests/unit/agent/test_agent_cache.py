"""The lookup cache's invalidation rule, its race, its bounds, and following the feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastack.agent.cache import MAX_STAMPS, Change, Identity, LookupCache, PortKey, subjects_of
from metastack.agent.control import ChangePage
from metastack.agent.feed import follow_changes
from metastack.client.feed import Follower
from metastack.errors import ChangesPruned, UpstreamUnavailable
from metastack.tasks import cancel_and_wait

A = Identity("inst-a", "proj-a")
KEY: PortKey = (("net-a",), "ip_address", "10.0.0.5")


def live_cache(ttl: float = 60.0, size: int = 100) -> LookupCache:
    cache = LookupCache(ttl, size)
    cache.set_live(True, 0.0)
    return cache


def port_change(revision: int, network: str = "net-a", port: str = "p1") -> Change:
    return Change(revision, "port", port, network_id=network)


def test_hit_then_invalidated_by_a_change_on_its_network() -> None:
    cache = live_cache()
    assert cache.store_port(KEY, A, cache.ticket(), 0.0)
    assert cache.get_port(KEY, 1.0) == (A,)
    cache.apply([port_change(1, network="net-b")], 2.0)
    assert cache.get_port(KEY, 3.0) == (A,)  # another network: untouched
    cache.apply([port_change(2)], 4.0)
    assert cache.get_port(KEY, 5.0) is None


def test_negative_results_are_cached_and_voided_by_a_new_port() -> None:
    cache = live_cache()
    cache.store_port(KEY, None, cache.ticket(), 0.0)
    assert cache.get_port(KEY, 1.0) == (None,)
    cache.apply([port_change(1)], 2.0)
    assert cache.get_port(KEY, 3.0) is None


def test_race_lookup_started_before_a_change_is_refused() -> None:
    cache = live_cache()
    ticket = cache.ticket()  # lookup sent to the control API ...
    cache.apply([port_change(1)], 1.0)  # ... the feed reports the port moved ...
    assert not cache.store_port(KEY, A, ticket, 2.0)  # ... the old answer arrives: refused
    assert cache.get_port(KEY, 3.0) is None
    assert cache.stats["refused"] == 1
    fresh = cache.ticket()
    assert cache.store_port(KEY, A, fresh, 4.0)  # a lookup started after the change is kept


def test_race_is_refused_even_after_the_stamp_is_pruned() -> None:
    cache = live_cache(ttl=10.0)
    ticket = cache.ticket()
    cache.apply([port_change(1)], 0.0)
    cache.apply([port_change(2, network="net-z")], 100.0)  # prunes the old stamp
    assert not cache.store_port(KEY, A, ticket, 101.0)


def test_instance_and_project_changes_void_what_resolved_to_them() -> None:
    cache = live_cache()
    for change in (Change(1, "instance", "inst-a"), Change(2, "project", "proj-a")):
        cache.store_port(KEY, A, cache.ticket(), 0.0)
        cache.apply([change], 1.0)
        assert cache.get_port(KEY, 1.0) is None


def test_router_entries_follow_router_and_interface_port_changes() -> None:
    cache = live_cache()
    for change in (Change(1, "router", "r1"), port_change(2, port="rp-a")):
        cache.store_router("r1", ("net-a",), ["rp-a"], cache.ticket(), 0.0)
        assert cache.get_router("r1", 0.5) == ("net-a",)
        cache.apply([change], 1.0)
        assert cache.get_router("r1", 1.0) is None


def test_ttl_and_size_bounds() -> None:
    cache = live_cache(ttl=10.0, size=2)
    cache.store_port(KEY, A, cache.ticket(), 0.0)
    assert cache.get_port(KEY, 10.0) == (A,)
    assert cache.get_port(KEY, 10.5) is None
    for n in range(5):
        cache.store_port((("net-a",), "ip_address", f"10.0.0.{n}"), A, cache.ticket(), 0.0)
    assert len(cache.ports.entries) == 2


def test_not_live_means_no_reads_and_no_writes() -> None:
    cache = live_cache()
    cache.store_port(KEY, A, cache.ticket(), 0.0)
    ticket = cache.ticket()
    cache.set_live(False, 1.0)
    assert cache.get_port(KEY, 1.0) is None
    assert not cache.store_port(KEY, A, cache.ticket(), 1.0)
    cache.set_live(True, 2.0)
    assert cache.get_port(KEY, 2.0) is None  # dropped when the feed went dark
    assert not cache.store_port(KEY, A, ticket, 2.0)  # in flight across the outage


def test_disabled_cache_stores_nothing() -> None:
    cache = live_cache(ttl=0)
    assert not cache.enabled
    assert not cache.store_port(KEY, A, cache.ticket(), 0.0)


def test_stamps_are_bounded() -> None:
    cache = live_cache(ttl=1e9)
    for n in range(MAX_STAMPS + 10):
        cache.invalidate([("network", f"n{n}")], 0.0)
    assert len(cache._stamps) <= MAX_STAMPS


@pytest.mark.parametrize(
    "change",
    [
        Change(1, "port", "p1"),  # no network: cannot be narrowed
        Change(1, "subnet", "s1"),
        Change(1, "flavor", "f1"),
    ],
)
def test_unnarrowable_changes_resync(change: Change) -> None:
    assert subjects_of(change) is None
    cache = live_cache()
    cache.store_port((("net-q",), "ip_address", "1.1.1.1"), A, cache.ticket(), 0.0)
    cache.apply([change], 1.0)
    assert cache.get_port((("net-q",), "ip_address", "1.1.1.1"), 1.0) is None


async def test_feed_pages() -> None:
    cache = live_cache()
    cache.store_port(KEY, A, cache.ticket(), 0.0)
    seen: list[int] = []
    feed = ScriptedFeed(
        ChangePage(1, ()),  # first contact: follow from revision 1
        # contiguous page: applied, continue after its last change
        ChangePage(3, (Change(2, "network", "net-z"), Change(3, "network", "net-y"))),
        # a page cut short: continue after the last change it holds, at once
        ChangePage(9, (Change(4, "network", "net-z"),)),
    )
    follower = follow_changes(feed, cache, 20, clock=lambda: 0.0, on_changes=seen_by(seen))
    async with following(follower):
        await feed.consumed()
        assert feed.asked == [(0, 0), (1, 20), (3, 20), (4, 0)]
        assert seen == [2, 3, 4]
        assert cache.stats["resyncs"] == 1  # the first contact only
        cache.store_port(KEY, A, cache.ticket(), 0.0)
        # a gap (changes lost), a restarted counter, a pruned feed: each drops everything
        feed.script(
            ChangePage(8, (Change(7, "network", "n"),)),
            ChangePage(2, ()),
            ChangesPruned(2, 30, 40),
            ChangePage(41, (Change(41, "port", "p", network_id="net-q"),)),
        )
        await feed.consumed()
        assert cache.get_port(KEY, 0.0) is None
        assert feed.asked[4:] == [(7, 0), (2, 20), (40, 0), (41, 20)]
        assert cache.stats["resyncs"] == 4
        assert seen == [2, 3, 4, 41] and follower.since == 41 and cache.live


async def test_a_failing_feed_starts_over() -> None:
    cache = live_cache()
    feed = ScriptedFeed(ChangePage(5, ()), UpstreamUnavailable("control API down"))
    follower = follow_changes(feed, cache, 20, clock=lambda: 0.0)
    async with following(follower):
        await feed.consumed()
        assert not cache.live  # bypassed while the feed is down
        assert feed.asked == [(0, 0), (5, 20), (0, 0)]  # then first contact again


def seen_by(seen: list[int]) -> Callable[[Sequence[Change]], None]:
    return lambda changes: seen.extend(change.revision for change in changes)


class ScriptedFeed:
    """Answers the follower's polls from a script, then waits (as a quiet long poll)."""

    def __init__(self, *answers: ChangePage | Exception) -> None:
        self.answers: list[ChangePage | Exception] = list(answers)
        self.asked: list[tuple[int, float]] = []
        self._idle = asyncio.Event()

    def script(self, *answers: ChangePage | Exception) -> None:
        self.answers.extend(answers)
        self._idle.clear()

    async def consumed(self) -> None:
        await asyncio.wait_for(self._idle.wait(), 2)

    async def changes(self, since: int, wait: float, timeout: float) -> ChangePage:
        self.asked.append((since, wait))
        while not self.answers:
            self._idle.set()
            await asyncio.sleep(0.01)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@asynccontextmanager
async def following(follower: Follower) -> AsyncIterator[None]:
    task = asyncio.create_task(follower.run())
    try:
        yield
    finally:
        await cancel_and_wait(task)


@given(
    st.lists(
        st.tuples(st.sampled_from(["lookup", "change", "answer"]), st.sampled_from("abc")),
        max_size=40,
    )
)
def test_no_interleaving_caches_an_answer_older_than_a_change(
    steps: list[tuple[str, str]],
) -> None:
    """Model check: lookups start, changes land, answers arrive, in any order.

    The cache must never return an owner older than the last change on the network.
    """
    cache = live_cache()
    truth = {"a": 0, "b": 0, "c": 0}  # network -> owner version
    in_flight: list[tuple[str, int, int]] = []  # (network, ticket, version read)
    revision = 0
    for action, network in steps:
        if action == "lookup":
            in_flight.append((network, cache.ticket(), truth[network]))
        elif action == "change":
            revision += 1
            truth[network] += 1
            cache.apply([port_change(revision, network=network)], 0.0)
        elif in_flight:
            net, ticket, version = in_flight.pop(0)
            cache.store_port(
                ((net,), "ip_address", "10.0.0.5"), Identity(str(version), "p"), ticket, 0.0
            )
        for net in truth:
            hit = cache.get_port(((net,), "ip_address", "10.0.0.5"), 0.0)
            if hit is not None and hit[0] is not None:
                assert hit[0].instance_id == str(truth[net])
