"""A running metadata API on an ephemeral port, backed by the fake store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from metastack.api.metadata_app import MetadataServer
from metastack.config import ApiConfig
from support.metadata_fakes import SECRET, FakeStore


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def metadata_api(store: FakeStore) -> AsyncIterator[ServerFactory]:
    """Start the real metadata app on 127.0.0.1:<ephemeral>; yields a factory(config=...)."""
    servers: list[MetadataServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**config_fields: Any) -> tuple[str, aiohttp.ClientSession]:
        fields: dict[str, Any] = {
            "metadata_proxy_shared_secret": SECRET,
            "database_url": "postgresql+psycopg://unused/none",
        }
        fields.update(config_fields)
        config = ApiConfig.model_validate(fields)
        server = MetadataServer(config, store)
        await server.start()
        servers.append(server)
        port = server.port
        session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", auto_decompress=False)
        sessions.append(session)
        return f"http://127.0.0.1:{port}", session

    yield start
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close(1.0)
