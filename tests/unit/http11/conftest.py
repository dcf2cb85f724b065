"""Fixtures: an http11 server on a unix socket and scripted raw peers for the client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import cast

import pytest
import uvloop

from metastack.http11 import HttpServer
from unit.http11.servers import LIMITS, echo


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test on both loops: production runs on uvloop, whose transports differ."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def echo_server(tmp_path: Path) -> AsyncIterator[tuple[str, HttpServer]]:
    """The echo handler served by HttpServer on a unix socket: (path, server)."""
    path = str(tmp_path / "echo.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    server = await HttpServer.start(echo, LIMITS, sock, backlog=64)
    yield path, server
    await server.close(0.1)


class Script(asyncio.Protocol):
    """A raw peer answering each request (one per read) with the next canned reply;
    a reply of None means: say nothing; b"" means: close."""

    def __init__(self, replies: list[bytes | None], log: list[bytes]) -> None:
        self.replies = replies
        self.log = log
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.log.append(b"CONNECT")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.log.append(data)
        reply = self.replies.pop(0) if self.replies else b""
        if reply is None:
            return
        if reply == b"":
            self.transport.close()
            return
        self.transport.write(reply)


Scripted = Callable[[list[bytes | None]], Awaitable[tuple[str, list[bytes]]]]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Scripted]:
    """Start a raw peer on a unix socket with canned replies; returns (path, log)."""
    servers: list[asyncio.AbstractServer] = []

    async def start(replies: list[bytes | None]) -> tuple[str, list[bytes]]:
        path = str(tmp_path / f"peer{len(servers)}.sock")
        log: list[bytes] = []
        loop = asyncio.get_running_loop()
        servers.append(await loop.create_unix_server(lambda: Script(replies, log), path))
        return path, log

    yield start
    for server in servers:
        server.close()
