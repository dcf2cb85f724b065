"""`ControlClient`: a small async client for the control API (used by the CLI and agents)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from metastack.client.feed import ChangePage, parse_changes, parse_pruned
from metastack.errors import UpstreamUnavailable
from metastack.http11.endpoint import Endpoint
from metastack.tls import client_context
from metastack.upstreams import HttpProbe, Member, MemberDown, Upstreams, unless_down

DEFAULT_URL = "http://127.0.0.1:8774"
TOKEN_HEADER = "X-Auth-Token"
Params = Mapping[str, str | Sequence[str] | None]


class ControlApiError(Exception):
    """The control API answered an error (status > 0) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, document: Any = None) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message
        self.document = document  # the decoded JSON error body, when there was one


class ControlClient:
    """JSON calls to the control API at `base_url`, with the admin token when one is given.

    Several base URLs (the netagent's `control_url` list) are probed and chosen as
    :mod:`metastack.upstreams` says; a call whose URL cannot be reached goes to the next,
    and so does a GET or HEAD cut off unanswered (its URL found down while it waited, as a
    long-poll on a dead node is). https URLs are verified against `ca_file` (a PEM CA
    bundle; the system CAs without it): TlsFileError if it cannot be read.
    """

    def __init__(
        self,
        base_url: str | Sequence[str] = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 70.0,
        ca_file: str | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self._ssl: ssl.SSLContext | None = client_context(ca_file) if ca_file else None
        self._base = URL(urls[0].rstrip("/"))
        self._headers = {TOKEN_HEADER: token} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it
        self._upstreams: Upstreams[URL] | None = None
        if len(urls) > 1:
            probe_headers = [(TOKEN_HEADER.encode(), token.encode())] if token else []
            members = [
                Member(
                    url,
                    URL(url.rstrip("/")),
                    HttpProbe(
                        Endpoint.from_url(url),
                        b"/openapi.json",
                        headers=probe_headers,
                        ssl_context=self._ssl,
                    ),
                )
                for url in urls
            ]
            self._upstreams = Upstreams(members, what="control API")

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (and stop probing)."""
        if self._upstreams is not None:
            await self._upstreams.close()
            for member in self._upstreams.members:
                if isinstance(member.probe, HttpProbe):
                    await member.probe.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, body: Any = None, params: Params | None = None
    ) -> Any:
        """One call; the decoded JSON answer (None for 204). ControlApiError on any failure."""
        query: list[tuple[str, str]] = []
        for key, value in (params or {}).items():
            if isinstance(value, str):
                query.append((key, value))
            elif value is not None:
                query.extend((key, item) for item in value)
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        try:
            if self._upstreams is None:
                return await self._send(self._base, method, path, body, query)
            return await self._send_any(self._upstreams, method, path, body, query)
        except (aiohttp.ClientError, TimeoutError, UpstreamUnavailable) as exc:
            reason = str(exc) or type(exc).__name__
            where = self._base if self._upstreams is None else "any control API URL"
            raise ControlApiError(0, f"cannot reach {where}: {reason}") from exc

    async def _send_any(
        self,
        upstreams: Upstreams[URL],
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, str]],
    ) -> Any:
        upstreams.start()
        replayable = method in ("GET", "HEAD")
        tried: list[Member[URL]] = []
        last_error: BaseException | None = None
        while (member := upstreams.pick(tried)) is not None:
            tried.append(member)
            member.outstanding += 1
            try:
                call = self._send(member.target, method, path, body, query)
                # A write left to its own timeout: it may have been applied already.
                return await (unless_down(member, call) if replayable else call)
            except aiohttp.ClientConnectorError as exc:  # never sent
                upstreams.refused(member, exc)
                last_error = exc
            except (aiohttp.ClientError, TimeoutError, MemberDown) as exc:
                if not replayable:
                    raise
                last_error = exc
            finally:
                member.outstanding -= 1
        raise UpstreamUnavailable(f"{last_error}")

    async def _send(
        self, base: URL, method: str, path: str, body: Any, query: list[tuple[str, str]]
    ) -> Any:
        assert self._session is not None
        url = (base / path.lstrip("/")).with_query(query)
        async with self._session.request(method, url, json=body, headers=self._headers) as response:
            text = await response.text()
            if response.status >= 400:
                raise ControlApiError(
                    response.status, _error_message(response, text), _document(text)
                )
            return await response.json() if text else None

    async def create(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/<plural>: the created object."""
        created: dict[str, Any] = await self.request("POST", f"v1/{plural}", body=body)
        return created

    async def list(self, plural: str, **filters: str | Sequence[str] | None) -> list[Any]:
        """GET /v1/<plural> with filters (a sequence means any of its values)."""
        answer = await self.request("GET", f"v1/{plural}", params=filters)
        items: list[Any] = answer[plural]
        return items

    async def show(self, plural: str, key: str) -> dict[str, Any]:
        """GET /v1/<plural>/<key>."""
        found: dict[str, Any] = await self.request("GET", f"v1/{plural}/{key}")
        return found

    async def update(self, plural: str, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH /v1/<plural>/<key> with the fields to change."""
        updated: dict[str, Any] = await self.request("PATCH", f"v1/{plural}/{key}", body=body)
        return updated

    async def delete(self, plural: str, key: str) -> None:
        """DELETE /v1/<plural>/<key>."""
        await self.request("DELETE", f"v1/{plural}/{key}")

    async def changes(self, since: int = 0, wait: float = 0, limit: int = 1000) -> dict[str, Any]:
        """GET /v1/changes: {"revision": current, "changes": [...]} after `since`."""
        params = {"since": str(since), "wait": str(wait), "limit": str(limit)}
        answer: dict[str, Any] = await self.request("GET", "v1/changes", params=params)
        return answer


class FeedOf:
    """A `FeedSource` over a ControlClient (or anything with its `changes`)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def changes(self, since: int, wait: float, timeout: float) -> ChangePage:
        """One page; ChangesPruned on 410, UpstreamUnavailable on any other failure."""
        try:
            answer = await asyncio.wait_for(self._client.changes(since, wait), timeout)
            return parse_changes(answer)
        except ControlApiError as exc:
            if exc.status == 410:
                raise parse_pruned(since, exc.document) from exc
            raise UpstreamUnavailable(f"control API: {exc}") from exc
        except TimeoutError as exc:
            raise UpstreamUnavailable("control API: the change feed did not answer") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamUnavailable(f"control API: malformed change feed: {exc!r}") from exc


def _document(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_message(response: aiohttp.ClientResponse, text: str) -> str:
    try:
        document = json.loads(text)
    except ValueError:
        return text.strip()[:200] or (response.reason or "")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return text.strip()[:200]
