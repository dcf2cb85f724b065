"""Client of the control API endpoints the agent reads: ports, routers and the change feed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from metastack.agent.cache import Change
from metastack.errors import UpstreamUnavailable


@dataclass(frozen=True, slots=True)
class Port:
    """The fields of a control API port that identify a guest."""

    id: str
    network_id: str
    project_id: str
    mac_address: str
    ip_addresses: tuple[str, ...]
    device_id: str


@dataclass(frozen=True, slots=True)
class Router:
    """A router's internal interfaces: the networks its proxy may see guests from."""

    id: str
    networks: tuple[str, ...]
    interface_ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One answer of the change feed: the current revision and changes after `since`."""

    revision: int
    changes: tuple[Change, ...]


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def parse_port(item: dict[str, Any]) -> Port:
    """A port object of `GET /v1/ports`; missing fields read as empty."""
    fixed_ips = item.get("fixed_ips") or []
    return Port(
        id=_text(item, "id"),
        network_id=_text(item, "network_id"),
        project_id=_text(item, "project_id"),
        mac_address=_text(item, "mac_address").lower(),
        ip_addresses=tuple(
            _text(fixed, "ip_address") for fixed in fixed_ips if isinstance(fixed, dict)
        ),
        device_id=_text(item, "device_id"),
    )


def parse_router(item: dict[str, Any]) -> Router:
    """A router object of `GET /v1/routers/{id}`, reduced to its interfaces."""
    interfaces = [i for i in item.get("interfaces") or [] if isinstance(i, dict)]
    networks = sorted({_text(i, "network_id") for i in interfaces} - {""})
    ports = sorted({_text(i, "port_id") for i in interfaces} - {""})
    return Router(_text(item, "id"), tuple(networks), tuple(ports))


def parse_changes(document: dict[str, Any]) -> ChangePage:
    """A page of `GET /v1/changes`."""
    changes = tuple(
        Change(
            revision=int(item["revision"]),
            resource=_text(item, "resource"),
            resource_id=_text(item, "resource_id"),
            network_id=_text(item, "network_id"),
            instance_id=_text(item, "instance_id"),
            project_id=_text(item, "project_id"),
        )
        for item in document.get("changes") or []
    )
    return ChangePage(int(document["revision"]), changes)


class _Missing(UpstreamUnavailable):
    """A 404: only a lookup by id may read it as "no such object"; elsewhere it means 503."""


class ControlClient:
    """Reads the control API over the shared pooled session; failures -> UpstreamUnavailable."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self._session = session
        self._base = URL(base_url)
        self._headers = {"X-Auth-Token": token} if token else {}

    async def _get(self, url: URL, timeout: float | None = None) -> dict[str, Any]:
        # Without a timeout of its own a lookup is bounded by the request's deadline.
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.get(
                url, headers=self._headers, timeout=client_timeout
            ) as response:
                if response.status == 404:
                    raise _Missing(f"control API: {url} not found")
                if response.status != 200:
                    raise UpstreamUnavailable(f"control API answered {response.status} for {url}")
                document = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UpstreamUnavailable(f"control API: {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(document, dict):
            raise UpstreamUnavailable(f"control API: {url} did not answer a JSON object")
        return document

    async def find_ports(
        self,
        networks: Sequence[str],
        *,
        ip_address: str | None = None,
        mac_address: str | None = None,
    ) -> list[Port]:
        """Ports on any of `networks` with this fixed IP or this MAC."""
        query: list[tuple[str, str]] = [("network_id", network) for network in networks]
        if ip_address is not None:
            query.append(("ip_address", ip_address))
        if mac_address is not None:
            query.append(("mac_address", mac_address))
        document = await self._get((self._base / "v1" / "ports").with_query(query))
        items = document.get("ports")
        if not isinstance(items, list):
            raise UpstreamUnavailable("control API: ports answer without a 'ports' list")
        return [parse_port(item) for item in items if isinstance(item, dict)]

    async def get_router(self, router_id: str) -> Router | None:
        """The router and its interfaces, or None if the control API does not know it."""
        try:
            document = await self._get(self._base / "v1" / "routers" / router_id)
        except _Missing:
            return None
        return parse_router(document)

    async def changes(self, since: int, wait: int, timeout: float) -> ChangePage:
        """Changes after revision `since`, long-polling up to `wait` seconds."""
        url = (self._base / "v1" / "changes").with_query(since=since, wait=wait)
        document = await self._get(url, timeout=timeout)
        try:
            return parse_changes(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamUnavailable(f"control API: malformed change feed: {exc!r}") from exc
