"""(guest address, network or router) -> instance identity, through the cache (spec B.3)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence

from metastack.agent.cache import Identity, LookupCache, PortKey
from metastack.agent.control import ControlClient, Port
from metastack.agent.source import Origin, Source
from metastack.errors import NotFound


def _same_ip(left: str, right: str) -> bool:
    try:
        return ipaddress.ip_address(left) == ipaddress.ip_address(right)
    except ValueError:
        return False


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


class Resolver:
    """Finds the instance behind a request; NotFound carries the upstream 404 text."""

    def __init__(
        self,
        control: ControlClient,
        cache: LookupCache,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        self._cache = cache
        self._clock = clock

    async def resolve(self, origin: Origin, deadline: float) -> Identity:
        """The identity for a parsed request, or NotFound -> 404; lookups the cache cannot
        answer must finish before `deadline` (event-loop time)."""
        if origin.network_id is not None:
            networks: tuple[str, ...] = (origin.network_id,)
        else:
            assert origin.router_id is not None
            networks = await self._router_networks(origin.router_id, deadline)
        found = await self._find(networks, origin.source, deadline) if networks else None
        if found is None:
            raise NotFound(f"Instance was not found on {origin.place()}.")
        return found

    async def _router_networks(self, router_id: str, deadline: float) -> tuple[str, ...]:
        cached = self._cache.get_router(router_id, self._clock())
        if cached is not None:
            return cached
        ticket = self._cache.ticket()
        router = await self._control.get_router(router_id, deadline)
        if router is None:
            return ()
        self._cache.store_router(
            router_id, router.networks, router.interface_ports, ticket, self._clock()
        )
        return router.networks

    async def _find(
        self, networks: tuple[str, ...], source: Source, deadline: float
    ) -> Identity | None:
        if source.mac_address is not None:
            key: PortKey = (networks, "mac_address", source.mac_address)
        elif source.ip_address is not None:
            key = (networks, "ip_address", source.ip_address)
        else:
            return None  # link-local address without an EUI-64 interface id
        cached = self._cache.get_port(key, self._clock())
        if cached is not None:
            return cached[0]
        ticket = self._cache.ticket()
        ports = await self._control.find_ports(
            networks,
            ip_address=source.ip_address,
            mac_address=source.mac_address,
            deadline=deadline,
        )
        found = matching_identity(ports, networks, source)
        self._cache.store_port(key, found, ticket, self._clock())
        return found
