"""Ports prefetched once a network's changes settle: guests then hit the cache, and a
change during the fetch voids what it brought."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from metastack.agent.cache import Change, Identity, LookupCache
from metastack.agent.control import ControlClient, Port
from metastack.agent.prefetch import Prefetcher
from metastack.agent.resolve import Resolver
from metastack.agent.source import Origin, Source
from metastack.errors import UpstreamUnavailable


class FakeControl:
    """Holds ports; counts calls; can hold an answer until released."""

    def __init__(self, ports: list[Port]) -> None:
        self.ports = ports
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.release: asyncio.Event | None = None
        self.fail = False

    async def find_ports(
        self,
        networks: Sequence[str],
        *,
        ip_address: str | None = None,
        mac_address: str | None = None,
        deadline: float,
    ) -> list[Port]:
        self.calls.append((tuple(networks), ip_address))
        answer = [
            p
            for p in self.ports
            if p.network_id in networks and (ip_address is None or ip_address in p.ip_addresses)
        ]
        if self.release is not None:
            await self.release.wait()
        if self.fail:
            raise UpstreamUnavailable("control API down")
        return answer


def port(n: int, network: str = "net-a", ip: str | None = None, device: str | None = None) -> Port:
    return Port(
        f"p{n}",
        network,
        "proj",
        f"fa:16:3e:00:00:{n:02x}",
        (ip or f"10.0.0.{n}",),
        device if device is not None else f"inst-{n}",
    )


def change(revision: int, network: str = "net-a", resource: str = "port") -> Change:
    return Change(revision, resource, f"p{revision}", network_id=network, instance_id="i")


def live_cache() -> LookupCache:
    cache = LookupCache(60.0, 1000)
    cache.set_live(True, 0.0)
    return cache


def ask(resolver: Resolver, ip: str, network: str = "net-a") -> asyncio.Future[Identity]:
    deadline = asyncio.get_running_loop().time() + 5
    origin = Origin(ip, Source(ip_address=ip), network, None)
    return asyncio.ensure_future(resolver.resolve(origin, deadline))


async def test_after_a_quiet_network_every_guest_is_a_cache_hit() -> None:
    control = FakeControl([port(n) for n in range(2, 40)])
    cache = live_cache()
    prefetcher = Prefetcher(cast(ControlClient, control), cache, "all", quiet=0.01)
    prefetcher.start()
    try:
        cache.apply([change(1), change(2)], 0.0)
        prefetcher.note([change(1), change(2)])
        for _ in range(100):
            await asyncio.sleep(0.01)
            if prefetcher.fetched:
                break
        assert control.calls == [(("net-a",), None)]  # one call for the whole network
        assert prefetcher.fetched == 38
        resolver = Resolver(cast(ControlClient, control), cache)
        found = await asyncio.gather(*(ask(resolver, f"10.0.0.{n}") for n in range(2, 40)))
        assert found == [Identity(f"inst-{n}", "proj") for n in range(2, 40)]
        assert len(control.calls) == 1  # no lookup of its own for any guest
    finally:
        await prefetcher.close()


async def test_a_change_during_the_fetch_voids_its_answer() -> None:
    control = FakeControl([port(5)])
    control.release = asyncio.Event()
    cache = live_cache()
    prefetcher = Prefetcher(cast(ControlClient, control), cache, "all")
    fetch = asyncio.create_task(prefetcher.fetch(["net-a"]))
    await asyncio.sleep(0)
    # The port moves to another instance while the answer is on its way.
    control.ports = [port(5, device="inst-new")]
    cache.apply([change(7)], 1.0)
    control.release.set()
    await fetch
    assert prefetcher.fetched == 0
    assert cache.get_port((("net-a",), "ip_address", "10.0.0.5"), 1.0) is None
    resolver = Resolver(cast(ControlClient, control), cache)
    assert await ask(resolver, "10.0.0.5") == Identity("inst-new", "proj")


async def test_an_address_held_twice_on_a_network_is_cached_as_nobody() -> None:
    control = FakeControl([port(5, ip="10.0.0.9"), port(6, ip="10.0.0.9"), port(7)])
    cache = live_cache()
    prefetcher = Prefetcher(cast(ControlClient, control), cache, "all")
    await prefetcher.fetch(["net-a"])
    assert cache.get_port((("net-a",), "ip_address", "10.0.0.9"), 0.0) == (None,)
    assert cache.get_port((("net-a",), "ip_address", "10.0.0.7"), 0.0) == (
        Identity("inst-7", "proj"),
    )


async def test_ports_without_an_instance_and_other_networks_are_left_out() -> None:
    control = FakeControl([port(5, device=""), port(6, network="net-b"), port(7)])
    cache = live_cache()
    prefetcher = Prefetcher(cast(ControlClient, control), cache, "all")
    await prefetcher.fetch(["net-a"])
    assert prefetcher.fetched == 1
    assert cache.get_port((("net-a",), "ip_address", "10.0.0.5"), 0.0) is None


async def test_seen_mode_prefetches_only_networks_it_answered_for() -> None:
    clock = [100.0]
    control = FakeControl([port(5), port(6, network="net-b")])
    cache = live_cache()
    prefetcher = Prefetcher(
        cast(ControlClient, control), cache, "seen", quiet=0.0, clock=lambda: clock[0]
    )
    prefetcher.note([change(1, "net-a"), change(2, "net-b")])
    assert prefetcher.due() == []
    prefetcher.served(("net-b",))
    prefetcher.note([change(3, "net-a"), change(4, "net-b")])
    assert prefetcher.due() == ["net-b"]
    clock[0] += 4000  # seen long ago: no longer prefetched
    prefetcher.note([change(5, "net-b")])
    assert prefetcher.due() == []


async def test_networks_wait_until_their_changes_settle() -> None:
    clock = [0.0]
    prefetcher = Prefetcher(
        cast(ControlClient, FakeControl([])), live_cache(), "all", quiet=1.0, clock=lambda: clock[0]
    )
    prefetcher.note([change(1)])
    clock[0] = 0.9
    prefetcher.note([change(2)])  # still changing
    clock[0] = 1.5
    assert prefetcher.due() == []
    clock[0] = 2.0
    assert prefetcher.due() == ["net-a"]
    assert prefetcher.due() == []


async def test_off_and_instance_changes_prefetch_nothing() -> None:
    prefetcher = Prefetcher(cast(ControlClient, FakeControl([])), live_cache(), "off", quiet=0)
    prefetcher.note([change(1)])
    assert prefetcher.due() == []
    everything = Prefetcher(cast(ControlClient, FakeControl([])), live_cache(), "all", quiet=0)
    everything.note([Change(1, "instance", "i1", instance_id="i1")])
    assert everything.due() == []


async def test_a_failed_fetch_is_logged_and_the_loop_goes_on() -> None:
    control = FakeControl([port(5)])
    control.fail = True
    cache = live_cache()
    prefetcher = Prefetcher(cast(ControlClient, control), cache, "all", quiet=0.01)
    prefetcher.start()
    try:
        prefetcher.note([change(1)])
        for _ in range(50):
            await asyncio.sleep(0.01)
            if control.calls:
                break
        await asyncio.sleep(0.05)
        assert prefetcher.running
        control.fail = False
        prefetcher.note([change(2)])
        for _ in range(100):
            await asyncio.sleep(0.01)
            if prefetcher.fetched:
                break
        assert prefetcher.fetched == 1
    finally:
        await prefetcher.close()


async def test_a_network_that_never_settles_is_fetched_after_the_longest_wait() -> None:
    clock = [0.0]
    prefetcher = Prefetcher(
        cast(ControlClient, FakeControl([])),
        live_cache(),
        "all",
        quiet=1.0,
        longest_wait=5.0,
        clock=lambda: clock[0],
    )
    for step in range(10):  # a change every half second: never quiet for a second
        clock[0] = step * 0.5
        prefetcher.note([change(step + 1)])
        assert prefetcher.due() == []
    clock[0] = 5.0
    prefetcher.note([change(11)])
    assert prefetcher.due() == ["net-a"]  # five seconds since its first unfetched change
    clock[0] = 5.5
    prefetcher.note([change(12)])
    assert prefetcher.due() == []  # the clock starts again from this change
