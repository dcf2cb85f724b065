"""The agent when the metadata API or the control API is down, slow, several, or on TLS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from integration.agent.agent_fakes import (
    SECRET,
    FakeMetadata,
    free_port,
    proxy_headers,
    serving,
    wait_until,
)
from metastack.agent.config import AgentConfig
from metastack.agent.server import RunningAgent, running
from metastack.errors import ConfigError

Start = Callable[..., contextlib.AbstractAsyncContextManager[aiohttp.ClientSession]]


@pytest.fixture
def start(make_config: Callable[..., AgentConfig]) -> Start:
    """Start an agent with config overrides; yields a client session on its socket."""

    @contextlib.asynccontextmanager
    async def started(**overrides: object) -> AsyncIterator[aiohttp.ClientSession]:
        async with running(make_config(**overrides)) as agent:
            connector = aiohttp.UnixConnector(path=agent.path)
            async with aiohttp.ClientSession(connector=connector) as session:
                yield session

    return started


async def timed_get(session: aiohttp.ClientSession) -> tuple[int, str, float]:
    began = time.monotonic()
    async with session.get("http://m/latest/meta-data/", headers=proxy_headers()) as response:
        body = await response.text()
        return response.status, body, time.monotonic() - began


async def test_api_down_is_503_fast_and_served_again_when_back(start: Start) -> None:
    port = free_port()
    async with start(metadata_endpoints=[f"http://127.0.0.1:{port}"]) as session:
        status, body, took = await timed_get(session)
        assert (status, took < 1.0) == (503, True)
        assert "temporarily unavailable" in body
        back = FakeMetadata(SECRET)
        async with serving(back.app(), port):
            status, _, _ = await timed_get(session)
            assert status == 200
        status, _, _ = await timed_get(session)
        assert status == 503


async def test_slow_api_is_503_within_the_timeout(start: Start, metadata: FakeMetadata) -> None:
    metadata.delay = 5.0
    async with start(upstream_timeout=0.5) as session:
        status, _, took = await timed_get(session)
    assert status == 503
    assert 0.4 < took < 1.0


async def test_a_slow_request_does_not_hold_the_others_behind_it(
    start: Start, metadata: FakeMetadata
) -> None:
    # One request at a time to the API: a slow one gives its turn up after 0.5 s.
    metadata.slow_paths["/openstack/latest/vendor_data2.json"] = 3.0
    async with start(upstream_concurrency=1, upstream_timeout=5.0) as session:
        slow = asyncio.ensure_future(
            session.get("http://m/openstack/latest/vendor_data2.json", headers=proxy_headers())
        )
        await asyncio.sleep(0.1)
        status, _, took = await timed_get(session)
        assert status == 200
        assert took < 2.0  # not behind the 3 s answer
        assert not slow.done()
        async with await slow as response:
            assert response.status == 200
        answers = await asyncio.gather(*(timed_get(session) for _ in range(5)))
        assert [a[0] for a in answers] == [200] * 5


async def test_control_api_down_is_503(start: Start) -> None:
    async with start(control_url=f"http://127.0.0.1:{free_port()}") as session:
        status, _, took = await timed_get(session)
    assert status == 503
    assert took < 1.0


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr")  # fmt: skip
        _openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey",
                 f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext",
                 "-out", f"{d}/{name}.pem")  # fmt: skip
    return d


async def test_https_with_ca_and_client_certificate(start: Start, pki: Path) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki / "ca.pem")
    server_context.load_cert_chain(pki / "server.pem", pki / "server.key")
    server_context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no metadata
    api = FakeMetadata(SECRET)
    runner = web.AppRunner(api.app(), handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        tls = {
            "metadata_endpoints": [f"https://127.0.0.1:{port}"],
            "auth_ca_cert": str(pki / "ca.pem"),
        }
        async with start(
            **tls,
            nova_client_cert=str(pki / "client.pem"),
            nova_client_priv_key=str(pki / "client.key"),
        ) as session:
            status, body, _ = await timed_get(session)
            assert status == 200, body
            assert api.seen[-1].headers["X-Instance-ID"] == "inst-a"
        async with start(**tls) as session:  # without the client certificate
            status, _, _ = await timed_get(session)
            assert status == 503
    finally:
        await runner.cleanup()


async def test_cli_starts_and_stops_the_agent(
    make_config: Callable[..., AgentConfig], tmp_path: Path
) -> None:
    config = make_config()
    toml = tmp_path / "metastack.toml"
    toml.write_text(
        "[agent]\n"
        f'metadata_proxy_shared_secret = "{SECRET}"\n'
        f'control_url = "{config.control_url}"\n'
    )
    socket_path = tmp_path / "cli.sock"
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "metastack"), "agent", "--config", str(toml),
        "--socket", str(socket_path), "--socket-mode", "group",
        "--endpoint", config.metadata_endpoints[0],
    )  # fmt: skip
    try:
        await wait_until(socket_path.exists, timeout=10)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o664
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=connector) as session:
            status, body, _ = await timed_get(session)
            assert status == 200, body
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    assert not socket_path.exists()


async def test_a_live_socket_is_not_taken_over(
    make_config: Callable[..., AgentConfig], agent: RunningAgent
) -> None:
    with pytest.raises(ConfigError, match="another process is serving"):
        async with running(make_config()):
            pass
    assert Path(agent.path).exists()
