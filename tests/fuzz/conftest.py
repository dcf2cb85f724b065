"""Fuzz fixtures: the control API served for real in a background thread over a fresh SQLite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from metastack.api.control import make_control_app
from metastack.config import ApiConfig
from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore


@dataclass
class LiveApi:
    """A control API listening on 127.0.0.1:<port> and the store under it."""

    base: str
    store: SqlStore


@pytest.fixture(scope="module")
def live_control_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The control API on an ephemeral port, its loop in a thread (clients may be sync)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'control.sqlite'}"
    upgrade(url)
    store = SqlStore(url)
    config = ApiConfig.model_validate({"database_url": url})
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(make_control_app(config, store, poll_interval=0.02), access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="fuzz-control-api", daemon=True)
    thread.start()
    assert ready.wait(10), "the control API did not start"
    port = runner.addresses[0][1]
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", store)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        store.close()
