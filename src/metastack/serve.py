"""Process plumbing shared by every service: logging, the event loop, signals, listeners."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

log = logging.getLogger("metastack")

LISTEN_BACKLOG = 4096
SHUTDOWN_TIMEOUT = 5.0  # seconds in-flight requests get when a service stops


def setup_logging(level: str = "INFO") -> None:
    """One stderr handler with timestamps; services log through `logging` only."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic narrates every plugin and migration step at INFO; keep only what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a service's main coroutine on uvloop when available, asyncio otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main())
    result: int = uvloop.run(main())
    return result


async def wait_for_stop() -> None:
    """Return when SIGTERM or SIGINT arrives; the previous handlers are restored after."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


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
    app: web.Application, sock: socket.socket, cleanups: list[Callable[[], Awaitable[None]]]
) -> None:
    """Serve an aiohttp app on an already listening socket; register its cleanup."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    cleanups.append(runner.cleanup)
    await web.SockSite(runner, sock).start()
