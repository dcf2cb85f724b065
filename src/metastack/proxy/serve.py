"""Run the proxy: one event loop, the agent client, the listeners and the control socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from metastack.errors import MetastackError
from metastack.heap import freeze_heap
from metastack.http11 import HttpProtocol, Limits
from metastack.proxy.config import ProxyConfig
from metastack.proxy.control import ControlHandler
from metastack.proxy.forward import Forwarder
from metastack.proxy.listeners import Listeners
from metastack.proxy.upstream import AgentClient

log = logging.getLogger("metastack.proxy")


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


async def serve(config: ProxyConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; raises MetastackError if a startup listener fails."""
    client = AgentClient(
        config.metadata_proxy_socket,
        connect_timeout=config.connect_timeout,
        pool_size=config.upstream_pool_size,
        concurrency=config.upstream_concurrency,
    )
    if config.long_poll_timeout is not None:
        log.warning(
            "long_poll_timeout is no longer used (ignored): every request, with"
            " wait_for_change=true or not, waits its turn and gets upstream_timeout (%g s)",
            config.upstream_timeout,
        )
    forwarder = Forwarder(client, upstream_timeout=config.upstream_timeout)
    listeners = Listeners(forwarder, limits_from(config), config.backlog)
    control: asyncio.AbstractServer | None = None
    try:
        for spec in config.listeners:
            await listeners.add(spec)
        if config.control_socket:
            control = await _start_control(
                config.control_socket, config.control_socket_mode, ControlHandler(listeners)
            )
        freeze_heap()
        log.info(
            "proxy ready: %d listeners, agent %s, control %s",
            len(listeners),
            config.metadata_proxy_socket,
            config.control_socket or "off",
        )
        await stop.wait()
    finally:
        if control is not None:
            control.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(config.control_socket)
        await listeners.close(config.shutdown_timeout)
        await client.close()


def _runner(config: ProxyConfig) -> Callable[[Coroutine[Any, Any, None]], None]:
    if config.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if config.event_loop == "uvloop":
                raise
        else:
            return uvloop.run  # type: ignore[no-any-return,unused-ignore]
    return asyncio.run


async def _main(config: ProxyConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(config, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(config: ProxyConfig) -> int:
    """Run the proxy in the foreground; returns the process exit code."""
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _runner(config)(_main(config))
    except MetastackError as exc:
        log.error("%s", exc)
        return 1
    return 0
