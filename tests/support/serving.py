"""Serve an app for tests that speak to it with sync clients: a loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from metastack.api.metadata_app import MetadataServer


@contextmanager
def serving(app: web.Application | MetadataServer) -> Iterator[int]:
    """Serve an aiohttp app or the metadata server on 127.0.0.1:<ephemeral> from an event
    loop in a thread; yield the port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(app, access_log=None) if isinstance(app, web.Application) else None
    port = 0

    async def start() -> None:
        nonlocal port
        if runner is not None:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
        else:
            assert isinstance(app, MetadataServer)
            await app.start()
            port = app.port

    async def stop() -> None:
        if runner is not None:
            await runner.cleanup()
        else:
            assert isinstance(app, MetadataServer)
            await app.close(1.0)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stop())
        loop.close()

    thread = threading.Thread(target=serve, name="test-api", daemon=True)
    thread.start()
    assert ready.wait(10), "the API did not start"
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
