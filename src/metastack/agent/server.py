"""Agent lifecycle: the unix socket, the pooled clients, the feed task, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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
from metastack.errors import ConfigError, UpstreamUnavailable
from metastack.http11 import Endpoint, HttpServer, Limits, Pool, encode_request
from metastack.logs import AccessLog, setup_logging
from metastack.metrics import AgentMetrics, new_registry
from metastack.runner import RunConfig, Runner
from metastack.tasks import cancel_and_wait
from metastack.tls import TlsFileError, client_context
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


class AgentService:
    """The agent under the runner: its socket, clients, change feed; readiness; drain."""

    def __init__(self, config: AgentConfig, metrics: AgentMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.cache = LookupCache(config.cache_expiration, config.cache_size)
        self.metrics.watch_cache(lambda: self.cache.stats)
        self._stack = contextlib.AsyncExitStack()
        self.control: ControlClient | None = None
        self.forwarder: Forwarder | None = None
        self._probes: list[Pool] = []
        self._grace = SHUTDOWN_GRACE

    async def start(self) -> None:
        try:
            await self._start(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        config = self.config
        endpoints = config.endpoints()
        ssl_context = (
            make_ssl_context(config) if any(url.startswith("https:") for url in endpoints) else None
        )
        cache = self.cache
        token = [(b"X-Auth-Token", config.admin_token.encode())] if config.admin_token else []

        try:
            control_ssl = (
                client_context(config.control_ca_file, key="agent.control_ca_file")
                if config.control_ca_file
                else None
            )
        except TlsFileError as exc:
            raise ConfigError(f"{exc.key}: {exc}") from None

        def control_pool(endpoint: Endpoint) -> Pool:
            return Pool(
                endpoint,
                connect_timeout=config.upstream_connect_timeout,
                pool_size=CONTROL_POOL_SIZE,
                ssl_context=control_ssl,
            )

        try:
            control_upstreams = http_upstreams(
                config.control_urls(),
                control_pool,
                what="control API",
                probe_path=b"/openapi.json",
                probe_headers=token,
                ssl_context=control_ssl,
            )
            forwarder = Forwarder(
                endpoints,
                ssl_context,
                loop=asyncio.get_running_loop(),
                connect_timeout=config.upstream_connect_timeout,
                concurrency=config.upstream_concurrency,
            )
            self._probes = [
                Pool(
                    Endpoint.from_url(url),
                    connect_timeout=config.upstream_connect_timeout,
                    pool_size=1,
                    ssl_context=ssl_context,
                )
                for url in endpoints
            ]
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        stack.push_async_callback(self._close_probes)
        stack.push_async_callback(forwarder.close)
        self.forwarder = forwarder
        control = self.control = ControlClient(control_upstreams, config.admin_token)
        stack.push_async_callback(control.close)
        sock = bind_unix_socket(
            config.metadata_proxy_socket, config.socket_mode(), config.metadata_backlog
        )
        stack.callback(sock.close)
        inode = os.lstat(config.metadata_proxy_socket).st_ino
        stack.callback(_unlink_if_ours, config.metadata_proxy_socket, inode)
        prefetcher = Prefetcher(control, cache, config.prefetch_ports if cache.enabled else "off")
        served = prefetcher.served if prefetcher.mode == "seen" else None
        handler = AgentHandler(
            Resolver(control, cache, served=served),
            forwarder,
            config.metadata_proxy_shared_secret,
            config.upstream_timeout,
            metrics=self.metrics,
            access_log=AccessLog(config.access_log),
        )
        server = await HttpServer.start(handler, LIMITS, sock, backlog=config.metadata_backlog)
        try:
            forwarder.start()
            control.start()
            stack.push_async_callback(prefetcher.close)
            if cache.enabled:
                follower = follow_changes(
                    control, cache, config.feed_wait, on_changes=prefetcher.note
                )
                feed = asyncio.create_task(follower.run())
                stack.push_async_callback(cancel_and_wait, feed)
                prefetcher.start()
        finally:  # closed first: requests in flight finish with the feed still followed
            stack.push_async_callback(self._drain, server)
        log.info("metadata agent listening on %s", config.metadata_proxy_socket)

    async def ready(self) -> bool:
        """The control API answers, and at least one metadata API endpoint does."""
        if self.control is None:
            return False
        timeout = self.config.upstream_connect_timeout
        try:
            await self.control.ping(timeout)
        except UpstreamUnavailable as exc:
            log.warning("not ready: control API: %s", exc)
            return False
        for probe in self._probes:
            endpoint = probe.endpoint
            data = encode_request(b"GET", endpoint.base_path + b"/", [(b"Host", endpoint.host)])
            try:
                answer = await probe.request(data, timeout=timeout, retry=True, queued=False)
            except UpstreamUnavailable as exc:
                log.warning("not ready: metadata API %s: %s", endpoint, exc)
                continue
            if answer.status < 500:
                return True
        return False

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let replies in flight finish within `timeout`, close all."""
        self._grace = timeout
        await self._stack.aclose()

    async def _drain(self, server: HttpServer) -> None:
        await server.close(self._grace)

    async def _close_probes(self) -> None:
        for probe in self._probes:
            await probe.close()


@contextlib.asynccontextmanager
async def running(
    config: AgentConfig, metrics: AgentMetrics | None = None
) -> AsyncIterator[RunningAgent]:
    """Serve on the configured socket until the context exits; then clean up in reverse."""
    service = AgentService(config, metrics)
    await service.start()
    try:
        assert service.forwarder is not None and service.control is not None
        yield RunningAgent(
            config.metadata_proxy_socket, service.cache, service.forwarder, service.control
        )
    finally:
        await service.stop(config.shutdown_timeout)


def _unlink_if_ours(path: str, inode: int) -> None:
    # A newer agent may already have replaced the file; leave its socket alone.
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)


def run(config: AgentConfig) -> int:
    """Process entry point under the runner; exit code 0, or 1 if it cannot start."""
    setup_logging(config.log_level, config.log_format)
    registry = new_registry()
    service = AgentService(config, AgentMetrics(registry))
    return Runner(RunConfig.of("agent", config), service, registry=registry).run()
