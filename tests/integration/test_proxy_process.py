"""`metastack proxy` as a real process, with an old config that still sets `long_poll_timeout`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

METASTACK = str(Path(sys.executable).with_name("metastack"))


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0")))
    return web.Response(text=request.path_qs)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Path]:
    """A stand-in agent on a unix socket that answers after `?s=` seconds."""
    path = tmp_path / "agent.sock"
    app = web.Application()
    app.router.add_get("/{tail:.*}", _slow)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    yield path
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(port: int, target: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return int(head.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_old_long_poll_timeout_is_accepted_ignored_and_warned(
    agent: Path, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        "[proxy]\n"
        f'metadata_proxy_socket = "{agent}"\n'
        'control_socket = ""\n'
        "upstream_timeout = 1.0\n"
        "long_poll_timeout = 330\n"
        f'listeners = [{{host = "127.0.0.1", port = {port}, network_id = "net-1"}}]\n'
    )
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [METASTACK, "proxy", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:  # up when its listener answers
            try:
                status, _ = await get(port, "/ready")
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
        assert status == 200
        started = time.monotonic()
        status, body = await get(port, "/slow?s=5&wait_for_change=true")
        took = time.monotonic() - started
        assert status == 504, body
        assert 0.9 < took < 2.0  # upstream_timeout (1 s), not long_poll_timeout (330 s)
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
    text = log.read_text()
    assert "long_poll_timeout is no longer used (ignored)" in text
    assert "gets upstream_timeout (1 s)" in text
