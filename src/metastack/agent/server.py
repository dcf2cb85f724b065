"""Agent lifecycle: the unix socket, the pooled clients, the feed task, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass

from metastack.agent.app import AgentHandler
from metastack.agent.cache import LookupCache
from metastack.agent.config import AgentConfig
from metastack.agent.control import ControlClient
from metastack.agent.feed import follow_changes
from metastack.agent.forward import Forwarder, make_ssl_context
from metastack.agent.prefetch import Prefetcher
from metastack.agent.resolve import Resolver
from metastack.errors import ConfigError
from metastack.heap import freeze_heap
from metastack.http11 import Endpoint, HttpServer, Limits, Pool
from metastack.tasks import cancel_and_wait
from metastack.upstreams import http_upstreams

log = logging.getLogger(__name__)

# What the proxies may send: their own guest limits (16 KiB of head, 1 MiB of body by
# default) plus the headers they add. Their pooled connections may idle a while.
LIMITS = Limits(
    max_header_bytes=65536,
    max_headers=200,
    max_body_bytes=1 << 20,
    header_timeout=10.0,
    keepalive_timeout=75.0,
)
SHUTDOWN_GRACE = 5.0
# Idle keep-alive connections kept to the control API (lookups and the change feed).
CONTROL_POOL_SIZE = 64


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left behind by an agent that is gone
        return
    finally:
        probe.close()
    raise ConfigError(f"{path}: another process is serving this socket")


def bind_unix_socket(path: str, mode: int, backlog: int) -> socket.socket:
    """Create the directory, bind, chmod and listen(backlog), then rename into place.

    The socket is built under a temporary name, so the configured path only ever shows a
    socket that already has its mode and accepts connections (and replaces a stale one
    atomically).
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    _remove_stale(path)
    building = os.path.join(directory, f".agent-{os.getpid()}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(building)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(building)
        os.chmod(building, mode)
        sock.listen(backlog)
        os.replace(building, path)
        sock.setblocking(False)
    except OSError:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(building)
        raise
    return sock


@dataclass(slots=True)
class RunningAgent:
    """What a started agent exposes to its caller (tests read the cache statistics and the
    endpoints' health)."""

    path: str
    cache: LookupCache
    forwarder: Forwarder
    control: ControlClient


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[RunningAgent]:
    """Serve on the configured socket until the context exits; then clean up in reverse."""
    endpoints = config.endpoints()
    ssl_context = (
        make_ssl_context(config) if any(url.startswith("https:") for url in endpoints) else None
    )
    cache = LookupCache(config.cache_expiration, config.cache_size)
    token = [(b"X-Auth-Token", config.admin_token.encode())] if config.admin_token else []

    def control_pool(endpoint: Endpoint) -> Pool:
        return Pool(
            endpoint,
            connect_timeout=config.upstream_connect_timeout,
            pool_size=CONTROL_POOL_SIZE,
        )

    try:
        control_upstreams = http_upstreams(
            config.control_urls(),
            control_pool,
            what="control API",
            probe_path=b"/openapi.json",
            probe_headers=token,
        )
        forwarder = Forwarder(
            endpoints,
            ssl_context,
            loop=asyncio.get_running_loop(),
            connect_timeout=config.upstream_connect_timeout,
            concurrency=config.upstream_concurrency,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    control = ControlClient(control_upstreams, config.admin_token)
    sock = bind_unix_socket(
        config.metadata_proxy_socket, config.socket_mode(), config.metadata_backlog
    )
    inode = os.lstat(config.metadata_proxy_socket).st_ino
    prefetcher = Prefetcher(control, cache, config.prefetch_ports if cache.enabled else "off")
    served = prefetcher.served if prefetcher.mode == "seen" else None
    handler = AgentHandler(
        Resolver(control, cache, served=served),
        forwarder,
        config.metadata_proxy_shared_secret,
        config.upstream_timeout,
    )
    server: HttpServer | None = None
    feed: asyncio.Task[None] | None = None
    try:
        server = await HttpServer.start(handler, LIMITS, sock, backlog=config.metadata_backlog)
        forwarder.start()
        control.start()
        if cache.enabled:
            feed = asyncio.create_task(
                follow_changes(control, cache, config.feed_wait, on_changes=prefetcher.note)
            )
            prefetcher.start()
        freeze_heap()
        log.info("metadata agent listening on %s", config.metadata_proxy_socket)
        yield RunningAgent(config.metadata_proxy_socket, cache, forwarder, control)
    finally:
        await prefetcher.close()
        await cancel_and_wait(feed)
        if server is not None:
            await server.close(SHUTDOWN_GRACE)
        await forwarder.close()
        await control.close()
        sock.close()
        _unlink_if_ours(config.metadata_proxy_socket, inode)


def _unlink_if_ours(path: str, inode: int) -> None:
    # A newer agent may already have replaced the file; leave its socket alone.
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)


async def serve(config: AgentConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running(config):
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(config: AgentConfig) -> int:
    """Process entry point: uvloop when installed; exit code 0, or 1 if it cannot start."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except (ConfigError, OSError) as exc:
        log.error("metastack agent: cannot start: %s", exc)
        return 1
    return 0
