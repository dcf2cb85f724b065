"""Fault fixtures: control + metadata apps in-process, a private PostgreSQL, root-only guards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from metastack import identity
from metastack.api.control import make_control_app
from metastack.api.metadata_app import MetadataServer
from metastack.config import ApiConfig
from metastack.store.sql import SqlStore

SECRET = "faults-secret"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "root: needs root (tmpfs mount, a private PostgreSQL run as postgres)"
    )


PG_BIN = Path(os.environ.get("METASTACK_PG_BIN", "/usr/lib/postgresql/15/bin"))
REQUEST_TIMEOUT = 15.0  # a request still open after this is a hang


@dataclass
class Reply:
    """One answered (or timed-out) request: status 0 means no answer in time."""

    status: int
    body: bytes
    seconds: float

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Cloud:
    """The control and metadata APIs over one store, with a client for both."""

    control: str
    metadata: str
    http: aiohttp.ClientSession
    store: SqlStore
    timeout: float = REQUEST_TIMEOUT
    replies: list[Reply] = field(default_factory=list)

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply:
        started = time.monotonic()
        try:
            async with self.http.request(
                method, url, timeout=aiohttp.ClientTimeout(total=self.timeout), **kwargs
            ) as response:
                body = await response.read()
                reply = Reply(response.status, body, time.monotonic() - started)
        except (TimeoutError, aiohttp.ClientError):
            reply = Reply(0, b"", time.monotonic() - started)
        self.replies.append(reply)
        return reply

    async def write(self, method: str, path: str, body: Any = None) -> Reply:
        """A control API call."""
        return await self._call(method, self.control + path, json=body)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A control API call that must succeed; its JSON body."""
        reply = await self.write(method, path, body)
        assert 200 <= reply.status < 300, (reply.status, reply.body)
        return reply.json() if reply.body else None

    async def read(
        self, instance: dict[str, Any], path: str = "/openstack/latest/meta_data.json", **kw: Any
    ) -> Reply:
        """A signed metadata API request as the agent would send it."""
        uuid = instance["uuid"]
        headers = {
            identity.INSTANCE_ID: uuid,
            identity.TENANT_ID: instance["project_id"],
            identity.INSTANCE_ID_SIGNATURE: identity.sign_instance_id(SECRET, uuid),
        }
        method = kw.pop("method", "GET")
        return await self._call(method, self.metadata + path, headers=headers, **kw)


def api_config(database_url: str, **fields: Any) -> ApiConfig:
    """The config both apps run with: signed mode with the test secret."""
    return ApiConfig.model_validate(
        {"database_url": database_url, "metadata_proxy_shared_secret": SECRET, **fields}
    )


@asynccontextmanager
async def running(config: ApiConfig, store: SqlStore) -> AsyncIterator[Cloud]:
    """Both apps on 127.0.0.1:<ephemeral> in this event loop."""
    runner: web.AppRunner | None = None
    metadata: MetadataServer | None = None
    try:
        runner = web.AppRunner(
            make_control_app(config, store, poll_interval=0.05), access_log=None, shutdown_timeout=1
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        control = f"http://127.0.0.1:{runner.addresses[0][1]}"
        metadata = MetadataServer(config, store)
        await metadata.start()
        async with aiohttp.ClientSession() as http:
            yield Cloud(control, f"http://127.0.0.1:{metadata.port}", http, store)
    finally:
        if metadata is not None:
            await metadata.close(1.0)
        if runner is not None:
            await runner.cleanup()


async def boot(cloud: Cloud, project: str, cidr: str = "10.0.0.0/24") -> dict[str, Any]:
    """A network with a subnet and one instance on it; the instance's JSON."""
    network = await cloud.ok("POST", "/v1/networks", {"project_id": project, "name": project})
    await cloud.ok("POST", "/v1/subnets", {"network_id": network["id"], "cidr": cidr})
    body = {
        "name": f"vm-{project}",
        "project_id": project,
        "networks": [{"network_id": network["id"]}],
    }
    instance: dict[str, Any] = await cloud.ok("POST", "/v1/instances", body)
    return instance


def free_port() -> int:
    """A TCP port nobody listens on right now (for servers that must be told their port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_root(reason: str) -> None:
    """Skip, saying why, unless running as root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {reason}")


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of our own in a temporary directory, started and stopped at will."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """An initialised, not yet started PostgreSQL cluster of our own, owned by `postgres`.

    Its directory is a fresh one under /tmp (pytest's tmp_path is private to root, so the
    postgres user could not reach it). At the end the server is stopped through its own pid
    file and the directory removed; the machine's shared server is never touched.
    """
    require_root("initdb and the server run as the postgres OS user (runuser)")
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (or no runuser)")
    home = Path(tempfile.mkdtemp(prefix="metastack-pg-"))
    data = home / "data"
    try:
        home.chmod(0o755)
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *initdb, "--no-sync"],
            capture_output=True,
            check=True,
            timeout=120,
        )
        server = PrivatePostgres(data, free_port())
        yield server
    finally:
        pid = PrivatePostgres(data, 0).pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # our own postmaster only, by its pid file
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)


async def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll an async predicate until true; the seconds it took (fails after timeout)."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, f"not true after {timeout} s"
        await asyncio.sleep(interval)
    return time.monotonic() - started


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted under tmp_path (root only), unmounted at the end."""
    require_root("mounting a tmpfs")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left; the file (delete it to free space)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError:
                continue
    return filler
