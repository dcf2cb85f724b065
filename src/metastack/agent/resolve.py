"""(guest address, network or router) -> instance identity, through the cache.

The contract: docs/wire-contracts.md#finding-the-instance.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from metastack.agent.cache import Identity, LookupCache, PortKey
from metastack.agent.control import ControlClient, Port
from metastack.agent.source import Origin, Source
from metastack.errors import NotFound
from metastack.http11 import UpstreamTimeout

T = TypeVar("T")

# Misses on the same networks in flight at once from which the agent takes it for a boot
# storm: the next miss fetches all the networks' ports in one call, and that one answer
# fills the cache for every guest on them (hundreds of single lookups otherwise).
STORM_MISSES = 8


def _same_ip(left: str, right: str) -> bool:
    try:
        return ipaddress.ip_address(left) == ipaddress.ip_address(right)
    except ValueError:
        return False


def identities_by_network(
    ports: Iterable[Port], networks: Iterable[str]
) -> dict[str, dict[str, Identity | None]]:
    """network -> (address written as a parsed X-Forwarded-For is -> its instance, or None
    where several instance ports on that network hold it)."""
    wanted = set(networks)
    holders: dict[str, dict[str, list[Port]]] = {}
    for port in ports:
        if not port.device_id or port.network_id not in wanted:
            continue
        for text in port.ip_addresses:
            try:
                address = str(ipaddress.ip_address(text))
            except ValueError:
                continue
            holders.setdefault(port.network_id, {}).setdefault(address, []).append(port)
    return {
        network: {
            address: Identity(found[0].device_id, found[0].project_id) if len(found) == 1 else None
            for address, found in by_address.items()
        }
        for network, by_address in holders.items()
    }


def _identities_by_address(
    ports: Sequence[Port], networks: Sequence[str]
) -> dict[str, Identity | None]:
    """Every fixed IP of the instance ports on `networks` -> its instance, or None where
    several ports (on one network or across them) hold it."""
    merged: dict[str, Identity | None] = {}
    for answers in identities_by_network(ports, networks).values():
        for address, found in answers.items():
            merged[address] = None if address in merged else found
    return merged


def matching_identity(
    ports: Sequence[Port], networks: Sequence[str], source: Source
) -> Identity | None:
    """The one instance port on `networks` holding the source address, else None.

    The control API filters already; checking again here means a filter it ignored
    can never hand out another network's instance.
    """
    candidates = [
        port
        for port in ports
        if port.device_id
        and port.network_id in networks
        and (
            (source.mac_address is not None and port.mac_address == source.mac_address)
            or (
                source.ip_address is not None
                and any(_same_ip(ip, source.ip_address) for ip in port.ip_addresses)
            )
        )
    ]
    if len(candidates) != 1:
        return None
    return Identity(candidates[0].device_id, candidates[0].project_id)


class _Flights:
    """Control-API lookups in flight, shared by the requests that miss the cache together.

    Without this, every request in flight for a guest whose cached identity just expired
    asks the control API on its own connection: each expiry under load is a burst of
    identical lookups, and the agent's control pool (and the API's descriptors) grows to
    the largest burst so far. A request joins a lookup only if no change was applied
    since it started (same cache ticket), so its answer is exactly as fresh as a cache
    hit; otherwise it starts its own.
    """

    def __init__(self) -> None:
        self._running: dict[object, tuple[int, asyncio.Task[Any]]] = {}

    async def run(
        self,
        key: object,
        ticket: int,
        lookup: Callable[[], Coroutine[Any, Any, T]],
        deadline: float,
    ) -> T:
        """The result of the lookup of `key` at `ticket`, started now or joined; the wait
        ends at `deadline` (event-loop time) whatever the lookup does."""
        flight = self._running.get(key)
        if flight is not None and flight[0] == ticket:
            task: asyncio.Task[T] = flight[1]
        else:
            task = asyncio.get_running_loop().create_task(lookup())
            self._running[key] = (ticket, task)
            task.add_done_callback(lambda done: self._landed(key, done))
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            # Shielded: a request that gives up (or is cancelled) leaves it to the others.
            return await asyncio.wait_for(asyncio.shield(task), max(remaining, 0.0))
        except TimeoutError:
            raise UpstreamTimeout("control API: no answer in time") from None

    def _landed(self, key: object, task: asyncio.Task[Any]) -> None:
        flight = self._running.get(key)
        if flight is not None and flight[1] is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved, even when every waiter has given up


class Resolver:
    """Finds the instance behind a request; NotFound carries the upstream 404 text."""

    def __init__(
        self,
        control: ControlClient,
        cache: LookupCache,
        clock: Callable[[], float] = time.monotonic,
        served: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self._control = control
        self._cache = cache
        self._clock = clock
        self._served = served  # told the networks of every guest answered
        self._flights = _Flights()
        # networks -> the keys being looked up one by one, with their requests in flight
        self._missing: dict[tuple[str, ...], dict[PortKey, int]] = {}

    async def resolve(self, origin: Origin, deadline: float, *, fresh: bool = False) -> Identity:
        """The identity for a parsed request, or NotFound -> 404; lookups the cache cannot
        answer must finish before `deadline` (event-loop time). `fresh` asks the control
        API even when the cache has an answer, and joins no lookup already in flight."""
        if origin.network_id is not None:
            networks: tuple[str, ...] = (origin.network_id,)
        else:
            assert origin.router_id is not None
            networks = await self._router_networks(origin.router_id, deadline, fresh)
        found = await self._find(networks, origin.source, deadline, fresh) if networks else None
        if found is None:
            raise NotFound(f"Instance was not found on {origin.place()}.")
        if self._served is not None:
            self._served(networks)
        return found

    async def _router_networks(
        self, router_id: str, deadline: float, fresh: bool = False
    ) -> tuple[str, ...]:
        cached = None if fresh else self._cache.get_router(router_id, self._clock())
        if cached is not None:
            return cached
        ticket = self._cache.ticket()

        async def lookup() -> tuple[str, ...]:
            router = await self._control.get_router(router_id, deadline)
            if router is None:
                return ()
            self._cache.store_router(
                router_id, router.networks, router.interface_ports, ticket, self._clock()
            )
            return router.networks

        if fresh:
            return await self._flights.run(
                ("router", router_id, object()), ticket, lookup, deadline
            )
        return await self._flights.run(("router", router_id), ticket, lookup, deadline)

    async def _find(
        self, networks: tuple[str, ...], source: Source, deadline: float, fresh: bool = False
    ) -> Identity | None:
        if source.mac_address is not None:
            key: PortKey = (networks, "mac_address", source.mac_address)
        elif source.ip_address is not None:
            key = (networks, "ip_address", source.ip_address)
        else:
            return None  # link-local address without an EUI-64 interface id
        cached = None if fresh else self._cache.get_port(key, self._clock())
        if cached is not None:
            return cached[0]
        ticket = self._cache.ticket()
        pending = self._missing.setdefault(networks, {})
        storm = key not in pending and len(pending) >= STORM_MISSES
        if storm and not fresh and source.ip_address is not None:
            return await self._find_in_networks(networks, source, key, ticket, deadline)
        pending[key] = pending.get(key, 0) + 1
        try:
            return await self._find_one(networks, source, key, ticket, deadline, fresh)
        finally:
            pending[key] -= 1
            if not pending[key]:
                del pending[key]
            if not pending and self._missing.get(networks) is pending:
                del self._missing[networks]

    async def _find_in_networks(
        self,
        networks: tuple[str, ...],
        source: Source,
        key: PortKey,
        ticket: int,
        deadline: float,
    ) -> Identity | None:
        """One call for all the networks' ports, shared by every miss in flight with it."""

        async def fetch() -> dict[str, Identity | None]:
            ports = await self._control.find_ports(networks, deadline=deadline)
            answers = _identities_by_address(ports, networks)
            now = self._clock()
            for address, found in answers.items():
                self._cache.store_port((networks, "ip_address", address), found, ticket, now)
            return answers

        answers = await self._flights.run(("networks", networks), ticket, fetch, deadline)
        found = answers.get(source.ip_address or "")
        self._cache.store_port(key, found, ticket, self._clock())
        return found

    async def _find_one(
        self,
        networks: tuple[str, ...],
        source: Source,
        key: PortKey,
        ticket: int,
        deadline: float,
        fresh: bool,
    ) -> Identity | None:

        async def lookup() -> Identity | None:
            ports = await self._control.find_ports(
                networks,
                ip_address=source.ip_address,
                mac_address=source.mac_address,
                deadline=deadline,
            )
            found = matching_identity(ports, networks, source)
            self._cache.store_port(key, found, ticket, self._clock())
            return found

        flight: object = ("port", key, object()) if fresh else ("port", key)
        return await self._flights.run(flight, ticket, lookup, deadline)
