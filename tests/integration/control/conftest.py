"""A real control API on 127.0.0.1:<ephemeral> over a migrated SQLite/PostgreSQL store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from metastack.api.control import make_control_app
from metastack.config import ApiConfig
from metastack.store.sql import SqlStore


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Api:
    """A thin test client: every call returns status and decoded JSON (None when empty)."""

    base: str
    session: aiohttp.ClientSession
    store: SqlStore
    headers: dict[str, str]

    async def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            text = await response.text()
            if text:
                assert response.content_type == "application/json"
            return Answer(response.status, await response.json() if text else None)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await self.call(method, path, **kwargs)
        assert answer.status == status, answer.body
        return answer.body


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(sql_store: SqlStore) -> AsyncIterator[ApiFactory]:
    """Start the control API; keyword arguments become ApiConfig fields."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**fields: Any) -> Api:
        config = ApiConfig.model_validate({"database_url": "sqlite://", **fields})
        runner = web.AppRunner(make_control_app(config, sql_store, poll_interval=0.02))
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        token = fields.get("admin_token")
        headers = {"X-Auth-Token": token} if token else {}
        return Api(f"http://127.0.0.1:{port}", session, sql_store, headers)

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def api(start_api: ApiFactory) -> Api:
    """The control API without an admin token."""
    return await start_api()
