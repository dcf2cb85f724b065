"""Run the proxy: one event loop, the agent client, the listeners and the control socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from metastack.http11 import HttpProtocol, Limits
from metastack.logs import setup_logging
from metastack.metrics import ProxyMetrics, new_registry
from metastack.proxy.config import ProxyConfig
from metastack.proxy.control import ControlHandler
from metastack.proxy.forward import Forwarder
from metastack.proxy.listeners import Listeners
from metastack.proxy.upstream import AgentClient
from metastack.runner import RunConfig, Runner

log = logging.getLogger("metastack.proxy")
PROBE_SECONDS = 1.0  # readiness: the agent's socket must accept within this


def limits_from(config: ProxyConfig) -> Limits:
    """The guest-side HTTP limits of a config."""
    return Limits(
        max_header_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        max_body_bytes=config.max_body_bytes,
        header_timeout=config.header_timeout,
        keepalive_timeout=config.keepalive_timeout,
    )


async def _start_control(path: str, mode: int, handler: ControlHandler) -> asyncio.AbstractServer:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a previous run
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    limits = Limits(max_body_bytes=4 << 20)  # a full PUT of thousands of listeners
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: HttpProtocol(handler, limits), path
    )
    os.chmod(path, mode)
    return server


class ProxyService:
    """The proxy under the runner: listeners and control socket; ready while the agent's
    socket accepts; drains the listeners at stop."""

    def __init__(self, config: ProxyConfig, metrics: ProxyMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.client: AgentClient | None = None
        self.listeners: Listeners | None = None
        self._control: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Open the startup listeners and the control socket; MetastackError if a startup
        listener cannot be opened."""
        config = self.config
        client = self.client = AgentClient(
            config.metadata_proxy_socket,
            connect_timeout=config.connect_timeout,
            pool_size=config.upstream_pool_size,
            concurrency=config.upstream_concurrency,
        )
        self.metrics.watch_queue(lambda: client.in_flight()[1])
        if config.long_poll_timeout is not None:
            log.warning(
                "long_poll_timeout is no longer used (ignored): every request, with"
                " wait_for_change=true or not, waits its turn and gets upstream_timeout (%g s)",
                config.upstream_timeout,
            )
        forwarder = Forwarder(
            client, upstream_timeout=config.upstream_timeout, metrics=self.metrics
        )
        listeners = self.listeners = Listeners(forwarder, limits_from(config), config.backlog)
        try:
            for spec in config.listeners:
                await listeners.add(spec)
            if config.control_socket:
                self._control = await _start_control(
                    config.control_socket, config.control_socket_mode, ControlHandler(listeners)
                )
        except BaseException:
            await self.stop(0.0)
            raise
        log.info(
            "proxy ready: %d listeners, agent %s, control %s",
            len(listeners),
            config.metadata_proxy_socket,
            config.control_socket or "off",
        )

    async def ready(self) -> bool:
        """The agent's socket accepts a connection."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                transport, _ = await loop.create_unix_connection(
                    asyncio.Protocol, self.config.metadata_proxy_socket
                )
        except (OSError, TimeoutError) as exc:
            log.warning("not ready: the agent's socket does not accept: %s", exc)
            return False
        transport.close()
        return True

    async def stop(self, timeout: float) -> None:
        """Close the control socket, drain the listeners within `timeout`, close the pool."""
        if self._control is not None:
            self._control.close()
            self._control = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.control_socket)
        if self.listeners is not None:
            await self.listeners.close(timeout)
            self.listeners = None
        if self.client is not None:
            await self.client.close()
            self.client = None


def run(config: ProxyConfig) -> int:
    """Run the proxy in the foreground; returns the process exit code."""
    setup_logging(config.log_level, config.log_format)
    registry = new_registry()
    service = ProxyService(config, ProxyMetrics(registry))
    return Runner(RunConfig.of("proxy", config), service, registry=registry).run()
