"""The runner's order: listener, start, READY=1; then STOPPING=1, not ready, drain, close."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

from metastack.notify import Notifier
from metastack.runner import RunConfig, Runner


class FakeService:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.healthy = True
        self.drained = asyncio.Event()

    async def start(self) -> None:
        self.events.append("start")

    async def ready(self) -> bool:
        return self.healthy

    async def stop(self, timeout: float) -> None:
        self.events.append(f"stop {timeout}")
        await self.drained.wait()


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_start_ready_stop_in_order(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    events: list[str] = []
    service = FakeService(events)
    config = RunConfig("fake", metrics_listen="127.0.0.1:0", shutdown_timeout=3.5)
    runner = Runner(config, service, notifier=Notifier(str(path)))
    serving = asyncio.create_task(runner.serve())
    loop = asyncio.get_running_loop()
    try:
        while not runner.started:
            await asyncio.sleep(0.01)
        assert await loop.sock_recv(receiver, 100) == b"READY=1"
        assert runner.metrics_address is not None
        host, port = runner.metrics_address
        base = f"http://{host}:{port}"
        assert await asyncio.to_thread(fetch, base + "/readyz") == 200
        service.healthy = False
        assert await asyncio.to_thread(fetch, base + "/readyz") == 503
        assert await asyncio.to_thread(fetch, base + "/healthz") == 200
        service.healthy = True

        runner.request_stop()
        assert await loop.sock_recv(receiver, 100) == b"STOPPING=1"
        while events[-1] != "stop 3.5":
            await asyncio.sleep(0.01)
        # Draining: alive, no longer ready, though the service itself says it could serve.
        assert await asyncio.to_thread(fetch, base + "/readyz") == 503
        assert await asyncio.to_thread(fetch, base + "/healthz") == 200
        service.drained.set()
        await asyncio.wait_for(serving, 5)
        assert events == ["start", "stop 3.5"]
    finally:
        serving.cancel()
        receiver.close()
        runner.notifier.close()
