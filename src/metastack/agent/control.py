"""Client of the control API endpoints the agent reads: ports, routers and the change feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from metastack.client.feed import ChangePage, parse_changes, parse_pruned
from metastack.errors import ChangesPruned, UpstreamUnavailable
from metastack.http11 import (
    ClientResponse,
    ConnectFailed,
    Headers,
    NotSent,
    Pool,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
)
from metastack.upstreams import Member, Upstreams, close_http_upstreams

__all__ = ["ChangePage", "ControlClient", "Port", "Router", "parse_port", "parse_router"]


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


class _Missing(UpstreamUnavailable):
    """A 404: only a lookup by id may read it as "no such object"; elsewhere it means 503."""


def _quote(value: str) -> str:
    # Ids, addresses and MACs only; ':' stays readable as in the control API's own links.
    return quote(value, safe=":")


class ControlClient:
    """Reads the control API over pooled keep-alive connections; failures -> UpstreamUnavailable.

    Every call takes a deadline in event-loop time: a lookup is bounded by the request
    it serves. Every call is a GET, so with several control API URLs one that cannot be
    reached, or is cut off unanswered (a probe found it down, long-polls included), is
    asked of the next (see :mod:`metastack.upstreams`).
    """

    def __init__(self, upstreams: Upstreams[Pool], token: str | None) -> None:
        self.upstreams = upstreams
        self._headers: Headers = [
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"identity"),
        ]
        if token:
            self._headers.append((b"X-Auth-Token", token.encode()))

    def start(self) -> None:
        """Start probing the control API URLs (with two or more)."""
        self.upstreams.start()

    async def _get(
        self, target: str, deadline: float, *, load: int = 1, since: int | None = None
    ) -> dict[str, Any]:
        """GET `target` from the URL with the fewest requests outstanding (a long-poll adds
        no `load`: it waits, it does not work) and the next ones as needed; for the change
        feed after `since`, ChangesPruned on 410."""
        loop = asyncio.get_running_loop()
        path = target.encode("ascii")
        tried: list[Member[Pool]] = []
        last_error: UpstreamUnavailable | None = None
        while (member := self.upstreams.pick(tried)) is not None:
            timeout = deadline - loop.time()
            if timeout <= 0:
                raise UpstreamTimeout(f"control API: no time left for {target} ({last_error!r})")
            pool = member.target
            head = [(b"Host", pool.endpoint.host), *self._headers]
            data = encode_request(b"GET", pool.endpoint.base_path + path, head)
            member.outstanding += load
            try:
                response = await pool.request(data, timeout=timeout, retry=True)
            except (NotSent, UpstreamBroken) as exc:  # a GET: another URL may answer it
                if isinstance(exc, ConnectFailed):
                    self.upstreams.refused(member, exc)
                last_error = exc
                tried.append(member)
                continue
            finally:
                member.outstanding -= load
            if since is not None and response.status == 410:
                raise parse_pruned(since, _json(response, target))
            return _document(response, target)
        raise UpstreamUnavailable(f"control API: no URL reachable for {target}: {last_error!r}")

    async def find_ports(
        self,
        networks: Sequence[str],
        *,
        ip_address: str | None = None,
        mac_address: str | None = None,
        deadline: float,
    ) -> list[Port]:
        """Ports on any of `networks` with this fixed IP or this MAC."""
        query = [f"network_id={_quote(network)}" for network in networks]
        if ip_address is not None:
            query.append(f"ip_address={_quote(ip_address)}")
        if mac_address is not None:
            query.append(f"mac_address={_quote(mac_address)}")
        document = await self._get("/v1/ports?" + "&".join(query), deadline)
        items = document.get("ports")
        if not isinstance(items, list):
            raise UpstreamUnavailable("control API: ports answer without a 'ports' list")
        return [parse_port(item) for item in items if isinstance(item, dict)]

    async def get_router(self, router_id: str, deadline: float) -> Router | None:
        """The router and its interfaces, or None if the control API does not know it."""
        try:
            document = await self._get(f"/v1/routers/{_quote(router_id)}", deadline)
        except _Missing:
            return None
        return parse_router(document)

    async def changes(self, since: int, wait: float, timeout: float) -> ChangePage:
        """Changes after revision `since`, long-polling up to `wait` seconds; ChangesPruned
        (410) when they are no longer kept."""
        deadline = asyncio.get_running_loop().time() + timeout
        target = f"/v1/changes?since={since}&wait={wait:g}"
        document = await self._get(target, deadline, load=0, since=since)
        try:
            return parse_changes(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamUnavailable(f"control API: malformed change feed: {exc!r}") from exc

    async def ping(self, timeout: float) -> None:
        """One cheap authenticated read (the change feed's first entry); raises
        UpstreamUnavailable when the control API does not answer it."""
        deadline = asyncio.get_running_loop().time() + timeout
        with contextlib.suppress(ChangesPruned):  # an answer too: revision 1 was pruned
            await self._get("/v1/changes?since=0&wait=0&limit=1", deadline, since=0)

    async def close(self) -> None:
        """Stop probing; close the connections."""
        await close_http_upstreams(self.upstreams)


def _document(response: ClientResponse, target: str) -> dict[str, Any]:
    """The JSON object of a 200; _Missing for a 404, UpstreamUnavailable otherwise."""
    if response.status == 404:
        raise _Missing(f"control API: {target} not found")
    if response.status != 200:
        raise UpstreamUnavailable(f"control API answered {response.status} for {target}")
    return _json(response, target)


def _json(response: ClientResponse, target: str) -> dict[str, Any]:
    """The JSON object of an answer; UpstreamUnavailable if it is not one."""
    try:
        document = json.loads(response.body)
    except ValueError as exc:
        raise UpstreamUnavailable(f"control API: {target}: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UpstreamUnavailable(f"control API: {target} did not answer a JSON object")
    return document
