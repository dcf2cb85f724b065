"""Listening sockets shared by the services: TCP listeners (one per worker) and aiohttp sites.

The event loop, signals, logging, health and the drain are the runner's
(:mod:`metastack.runner`); logging is :mod:`metastack.logs`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp's server takes a while to import; the proxy and agent never need it
    from aiohttp import web

LISTEN_BACKLOG = 4096


def bind_tcp(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """`count` listening sockets on one address with SO_REUSEPORT, one per worker process.

    Port 0 picks a free port for the first socket; the others join it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def start_site(
    app: web.Application,
    sock: socket.socket,
    cleanups: list[Callable[[], Awaitable[None]]],
    shutdown_timeout: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve an aiohttp app on an already listening socket (HTTPS with `ssl_context`);
    register its cleanup."""
    from aiohttp import web

    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    cleanups.append(runner.cleanup)
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
