"""`ControlClient`: a small async client for the control API (used by the CLI and agents)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

DEFAULT_URL = "http://127.0.0.1:8774"
TOKEN_HEADER = "X-Auth-Token"
Params = Mapping[str, str | Sequence[str] | None]


class ControlApiError(Exception):
    """The control API answered an error (status > 0) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message


class ControlClient:
    """JSON calls to the control API at `base_url`, with the admin token when one is given."""

    def __init__(
        self, base_url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 70.0
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._headers = {TOKEN_HEADER: token} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it

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
        """Close the connection pool."""
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
        url = (self._base / path.lstrip("/")).with_query(query)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(
                method, url, json=body, headers=self._headers
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ControlApiError(response.status, _error_message(response, text))
                return await response.json() if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ControlApiError(0, f"cannot reach {self._base}: {reason}") from exc

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


def _error_message(response: aiohttp.ClientResponse, text: str) -> str:
    try:
        document = json.loads(text)
    except ValueError:
        return text.strip()[:200] or (response.reason or "")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return text.strip()[:200]
