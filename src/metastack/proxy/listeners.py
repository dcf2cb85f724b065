"""The set of listening sockets one proxy process holds, changed at runtime."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from metastack.errors import Conflict
from metastack.http11 import HttpProtocol, Limits, drain
from metastack.netns.sockets import listen_in_netns
from metastack.proxy.config import ListenerConfig
from metastack.proxy.forward import Forwarder, ListenerHandler

log = logging.getLogger(__name__)
Key = tuple[str, str, int]


@dataclass(slots=True)
class _Held:
    spec: ListenerConfig
    sock: socket.socket
    server: asyncio.AbstractServer
    connections: set[HttpProtocol] = field(default_factory=set)


class Listeners:
    """Listening sockets keyed by (namespace, address, port), each with its identity."""

    def __init__(self, forwarder: Forwarder, limits: Limits, backlog: int) -> None:
        self.forwarder = forwarder
        self.limits = limits
        self.backlog = backlog
        self._held: dict[Key, _Held] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def specs(self) -> list[ListenerConfig]:
        """What is held now, in the order it was added."""
        return [held.spec for held in self._held.values()]

    async def add(self, spec: ListenerConfig) -> bool:
        """Hold a listener; False if exactly this one is held already (idempotent).

        Conflict if the same (namespace, address, port) is held with another identity;
        NetnsError if the namespace is missing or the address cannot be bound.
        """
        async with self._lock:
            return await self._add(spec)

    async def _add(self, spec: ListenerConfig) -> bool:
        held = self._held.get(spec.key)
        if held is not None:
            if held.spec == spec:
                return False
            raise Conflict(f"{_describe(spec.key)} is held for another identity")
        # Synchronous on the loop thread: see netns/sockets.py for why that is safe.
        sock = listen_in_netns(
            spec.netns, spec.host, spec.port, backlog=self.backlog, interface=spec.interface
        )
        if spec.network_id is not None:
            handler = ListenerHandler(self.forwarder, "network", spec.network_id)
        else:
            assert spec.router_id is not None
            handler = ListenerHandler(self.forwarder, "router", spec.router_id)
        connections: set[HttpProtocol] = set()
        limits = self.limits
        try:
            # create_server listen()s again: without the backlog it would cut it to 100.
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: HttpProtocol(handler, limits, connections, loop),
                sock=sock,
                backlog=self.backlog,
            )
        except BaseException:
            sock.close()
            raise
        self._held[spec.key] = _Held(spec, sock, server, connections)
        log.info("listening on %s for %s", _describe(spec.key), _identity(spec))
        return True

    async def remove(self, key: Key) -> bool:
        """Stop listening on key; idle connections close now, busy ones after their reply."""
        async with self._lock:
            return self._remove(key)

    def _remove(self, key: Key) -> bool:
        held = self._held.pop(key, None)
        if held is None:
            return False
        held.server.close()
        held.sock.close()
        for conn in list(held.connections):
            conn.close_if_idle()
        log.info("stopped listening on %s", _describe(key))
        return True

    async def remove_matching(
        self, netns: str, host: str | None = None, port: int | None = None
    ) -> list[ListenerConfig]:
        """Remove the listeners of a namespace ("" = the proxy's own), optionally one address."""
        async with self._lock:
            gone = [
                held.spec
                for key, held in self._held.items()
                if key[0] == netns
                and (host is None or key[1] == host)
                and (port is None or key[2] == port)
            ]
            for spec in gone:
                self._remove(spec.key)
            return gone

    async def replace(
        self, specs: list[ListenerConfig]
    ) -> tuple[list[ListenerConfig], list[ListenerConfig], list[tuple[ListenerConfig, str]]]:
        """Make the held set equal `specs`: returns (added, removed, failed with reason)."""
        wanted = {spec.key: spec for spec in specs}
        added: list[ListenerConfig] = []
        removed: list[ListenerConfig] = []
        failed: list[tuple[ListenerConfig, str]] = []
        async with self._lock:
            for key, held in list(self._held.items()):
                if wanted.get(key) != held.spec:
                    removed.append(held.spec)
                    self._remove(key)
            for spec in wanted.values():
                try:
                    if await self._add(spec):
                        added.append(spec)
                except Exception as exc:  # reported per listener; the others still apply
                    failed.append((spec, str(exc)))
        return added, removed, failed

    async def close(self, grace: float) -> None:
        """Stop listening everywhere; wait up to `grace` for in-flight replies."""
        async with self._lock:
            busy: list[HttpProtocol] = []
            for key in list(self._held):
                held = self._held[key]
                busy += [c for c in held.connections if not c.close_if_idle()]
                self._remove(key)
        await drain(busy, grace)


def _describe(key: Key) -> str:
    netns, host, port = key
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{where} in {netns or 'own namespace'}"


def _identity(spec: ListenerConfig) -> str:
    return f"network {spec.network_id}" if spec.network_id else f"router {spec.router_id}"
