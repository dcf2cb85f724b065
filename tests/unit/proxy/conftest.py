"""Fixtures for proxy tests: an in-process fake agent on a unix socket, a free port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.path == "/slow":
        await asyncio.sleep(float(request.query.get("s", "5")))
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        },
        headers={"X-Agent": "fake", "Connection": "keep-alive"},
    )


@pytest.fixture
def agent_path(tmp_path: Path) -> str:
    return str(tmp_path / "agent.sock")


@pytest.fixture
async def agent(agent_path: str) -> AsyncIterator[str]:
    """A fake agent that answers every path with what it received, as JSON."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.UnixSite(runner, agent_path).start()
    yield agent_path
    await runner.cleanup()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
