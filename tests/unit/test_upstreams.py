"""Choosing among equivalent endpoints, and their health by probes (fake probes, real loop)."""

from __future__ import annotations

import asyncio
import time

import pytest

from metastack.errors import UpstreamUnavailable
from metastack.upstreams import Member, MemberDown, Upstreams, unless_down


def members(*names: str) -> list[Member[str]]:
    return [Member(name, name) for name in names]


def test_idle_members_take_turns() -> None:
    upstreams = Upstreams(members("a", "b", "c"), what="api")
    assert [upstreams.pick().name for _ in range(7)] == list("abcabca")  # type: ignore[union-attr]


def test_fewest_outstanding_first_then_in_turn() -> None:
    a, b, c = all_ = members("a", "b", "c")
    upstreams = Upstreams(all_, what="api")
    a.outstanding, b.outstanding, c.outstanding = 2, 0, 1
    assert upstreams.pick() is b
    b.outstanding = 1
    assert upstreams.pick() is c  # b and c tie at 1: the turn has moved past b
    assert upstreams.pick() is b


def test_down_members_only_when_none_is_up() -> None:
    a, b, c = all_ = members("a", "b", "c")
    upstreams = Upstreams(all_, what="api")
    a.up = False
    assert {upstreams.pick().name for _ in range(4)} == {"b", "c"}  # type: ignore[union-attr]
    b.outstanding = 5
    assert all(upstreams.pick() is c for _ in range(3))  # a is idle, but down
    b.up = c.up = False
    b.outstanding = 0
    assert {upstreams.pick().name for _ in range(6)} == {"a", "b", "c"}  # type: ignore[union-attr]


def test_each_member_is_tried_once() -> None:
    upstreams = Upstreams(members("a", "b"), what="api")
    first = upstreams.pick()
    assert first is not None
    second = upstreams.pick([first])
    assert second is not None and second is not first
    assert upstreams.pick([first, second]) is None


def test_a_set_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one api"):
        Upstreams([], what="api")


class Node:
    """A fake endpoint's probe: answers, fails at once, or hangs (a powered-off node)."""

    def __init__(self) -> None:
        self.state = "up"
        self.probes = 0

    async def __call__(self, timeout: float) -> object:
        self.probes += 1
        if self.state == "refusing":
            raise UpstreamUnavailable("connection refused")
        if self.state == "dark":
            await asyncio.sleep(3600)
        return None


async def test_probes_find_a_dark_member_within_interval_plus_timeout_and_take_it_back() -> None:
    nodes = {"a": Node(), "b": Node()}
    downs: list[tuple[str, str]] = []
    upstreams = Upstreams(
        [Member(name, name, node) for name, node in nodes.items()],
        what="api",
        on_down=lambda member, reason: downs.append((member.name, reason)),
        interval=0.05,
        timeout=0.2,
    )
    a, b = upstreams.members
    upstreams.start()
    try:
        await asyncio.sleep(0.12)
        assert nodes["a"].probes >= 2 and nodes["b"].probes >= 2
        down = a.went_down()
        nodes["a"].state = "dark"
        began = time.monotonic()
        await asyncio.wait_for(down, 1.0)
        assert time.monotonic() - began <= 0.05 + 0.2 + 0.05
        assert (a.up, b.up) == (False, True)
        assert downs == [("a", "no answer to a probe in 0.2 s")]
        assert all(upstreams.pick() is b for _ in range(3))
        nodes["a"].state = "up"
        for _ in range(100):
            if a.up:
                break
            await asyncio.sleep(0.01)
        assert a.up
        assert {upstreams.pick().name for _ in range(2)} == {"a", "b"}  # type: ignore[union-attr]
        nodes["b"].state = "refusing"
        await asyncio.sleep(0.15)
        assert not b.up
        assert downs[1][0] == "b" and "connection refused" in downs[1][1]
        assert len(downs) == 2  # one call per transition, not per failed probe
    finally:
        await upstreams.close()


async def test_one_member_is_never_probed() -> None:
    node = Node()
    upstreams = Upstreams([Member("a", "a", node)], what="api", interval=0.01)
    upstreams.start()
    await asyncio.sleep(0.05)
    await upstreams.close()
    assert node.probes == 0
    upstreams.refused(upstreams.members[0], OSError("refused"))
    assert upstreams.members[0].up  # nothing would take it back


async def test_a_refused_connect_marks_down_while_probing() -> None:
    upstreams = Upstreams([Member(name, name, Node()) for name in "ab"], what="api", interval=10.0)
    upstreams.start()
    try:
        await asyncio.sleep(0.01)
        upstreams.refused(upstreams.members[0], OSError("refused"))
        assert [m.up for m in upstreams.members] == [False, True]
    finally:
        await upstreams.close()


async def test_unless_down_cuts_a_waiting_call_short() -> None:
    upstreams = Upstreams(members("a", "b"), what="api")
    a = upstreams.members[0]
    assert await unless_down(a, asyncio.sleep(0, "answer")) == "answer"
    cancelled = asyncio.Event()

    async def long_poll() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiting = asyncio.ensure_future(unless_down(a, long_poll()))
    await asyncio.sleep(0.01)
    upstreams.mark_down(a, "probe")
    with pytest.raises(MemberDown, match="a is down"):
        await waiting
    assert cancelled.is_set()
