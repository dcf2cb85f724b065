"""Cache misses that arrive together share one control-API lookup, unless a change came between."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest

from metastack.agent.cache import Identity, LookupCache
from metastack.agent.control import ControlClient, Port, Router
from metastack.agent.resolve import Resolver
from metastack.agent.source import Origin, Source
from metastack.http11 import UpstreamTimeout

GUEST = "10.0.0.5"


class FakeControl:
    """Answers lookups when released; counts them."""

    def __init__(self, device: str = "inst-a") -> None:
        self.device = device
        self.port_lookups = 0
        self.router_lookups = 0
        self.release = asyncio.Event()

    async def find_ports(
        self,
        networks: Sequence[str],
        *,
        ip_address: str | None = None,
        mac_address: str | None = None,
        deadline: float,
    ) -> list[Port]:
        self.port_lookups += 1
        device = self.device  # what the control API holds when the lookup is sent
        await self.release.wait()
        return [Port("p1", networks[0], "proj-a", "fa:16:3e:00:00:01", (GUEST,), device)]

    async def get_router(self, router_id: str, deadline: float) -> Router | None:
        self.router_lookups += 1
        await self.release.wait()
        return Router(router_id, ("net-a",), ("rp1",))


def make(control: FakeControl) -> tuple[Resolver, LookupCache]:
    cache = LookupCache(60.0, 100)
    cache.set_live(True, 0.0)
    return Resolver(cast(ControlClient, control), cache), cache


def origin(network: str | None = "net-a", router: str | None = None) -> Origin:
    return Origin(GUEST, Source(ip_address=GUEST), network, router)


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_misses_in_flight_together_share_one_lookup() -> None:
    control = FakeControl()
    resolver, _ = make(control)
    waiting = [asyncio.create_task(resolver.resolve(origin(), deadline())) for _ in range(20)]
    await asyncio.sleep(0.01)
    control.release.set()
    found = await asyncio.gather(*waiting)
    assert set(found) == {Identity("inst-a", "proj-a")}
    assert control.port_lookups == 1


async def test_router_networks_looked_up_once_for_requests_in_flight_together() -> None:
    control = FakeControl()
    resolver, _ = make(control)
    waiting = [
        asyncio.create_task(resolver.resolve(origin(None, "r1"), deadline())) for _ in range(10)
    ]
    await asyncio.sleep(0.01)
    control.release.set()
    await asyncio.gather(*waiting)
    assert (control.router_lookups, control.port_lookups) == (1, 1)


async def test_a_request_after_a_change_does_not_join_the_older_lookup() -> None:
    control = FakeControl()
    resolver, cache = make(control)
    before = asyncio.create_task(resolver.resolve(origin(), deadline()))
    await asyncio.sleep(0.01)
    control.device = "inst-b"  # the port now belongs to another instance
    cache.invalidate([("network", "net-a")], 1.0)
    after = asyncio.create_task(resolver.resolve(origin(), deadline()))
    await asyncio.sleep(0.01)
    control.release.set()
    assert (await before).instance_id == "inst-a"
    assert (await after).instance_id == "inst-b"
    assert control.port_lookups == 2


async def test_a_waiter_past_its_deadline_gives_up_alone() -> None:
    control = FakeControl()
    resolver, _ = make(control)
    patient = asyncio.create_task(resolver.resolve(origin(), deadline(5.0)))
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2.0):  # a regression fails here instead of hanging
        with pytest.raises(UpstreamTimeout):
            await resolver.resolve(origin(), deadline(0.05))
    control.release.set()
    assert (await patient).instance_id == "inst-a"
    assert control.port_lookups == 1


async def test_a_cancelled_first_request_leaves_the_lookup_to_the_others() -> None:
    control = FakeControl()
    resolver, _ = make(control)
    first = asyncio.create_task(resolver.resolve(origin(), deadline()))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(resolver.resolve(origin(), deadline()))
    await asyncio.sleep(0.01)
    first.cancel()
    control.release.set()
    assert (await second).instance_id == "inst-a"
    assert control.port_lookups == 1


class NetworkOfGuests:
    """A control API with `count` guests on one network; counts single and bulk lookups."""

    def __init__(self, count: int) -> None:
        self.ports = [
            Port(f"p{i}", "net-a", "proj-a", f"fa:16:3e:00:01:{i:02x}", (f"10.0.1.{i}",), f"vm-{i}")
            for i in range(1, count + 1)
        ]
        self.single = 0
        self.bulk = 0
        self.release = asyncio.Event()

    async def find_ports(
        self,
        networks: Sequence[str],
        *,
        ip_address: str | None = None,
        mac_address: str | None = None,
        deadline: float,
    ) -> list[Port]:
        if ip_address is None and mac_address is None:
            self.bulk += 1
        else:
            self.single += 1
        await self.release.wait()
        return [p for p in self.ports if ip_address is None or ip_address in p.ip_addresses]

    async def get_router(self, router_id: str, deadline: float) -> Router | None:
        return None


async def test_a_storm_of_misses_on_one_network_is_answered_by_one_bulk_lookup() -> None:
    control = NetworkOfGuests(100)
    cache = LookupCache(60.0, 1000)
    cache.set_live(True, 0.0)
    resolver = Resolver(cast(ControlClient, control), cache)
    guests = [f"10.0.1.{i}" for i in range(1, 101)] + ["10.0.1.200"]  # the last has no port
    waiting = [
        asyncio.create_task(
            resolver.resolve(Origin(ip, Source(ip_address=ip), "net-a", None), deadline())
        )
        for ip in guests
    ]
    await asyncio.sleep(0.01)
    control.release.set()
    found = await asyncio.gather(*waiting, return_exceptions=True)
    for ip, answer in zip(guests[:-1], found[:-1], strict=True):
        assert answer == Identity(f"vm-{ip.rsplit('.', 1)[1]}", "proj-a")
    assert isinstance(found[-1], Exception)  # NotFound: nobody holds 10.0.1.200
    assert control.single == 8  # up to STORM_MISSES single lookups, then one for all
    assert control.bulk == 1
    # the bulk answer filled the cache for guests that have not asked yet, too
    assert cache.get_port((("net-a",), "ip_address", "10.0.1.100"), 1.0) == (
        Identity("vm-100", "proj-a"),
    )
