"""One way to run a service (uvicorn's Config/Server shape): a :class:`RunConfig`, and a
:class:`Runner` that owns the event loop, the signals, the metrics and health listener,
readiness, `sd_notify` and the graceful drain around a :class:`Service`.

The order is fixed. Start: metrics listener, the service, READY=1. SIGTERM or SIGINT:
STOPPING=1, `/readyz` turns 503, the service stops accepting and lets what is in flight
finish within `shutdown_timeout` (long polls are answered at once), the listener closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from metastack.config import parse_hostport
from metastack.errors import ConfigError, MetastackError
from metastack.heap import freeze_heap
from metastack.http11 import HttpServer, Limits, Request, Response
from metastack.logs import LogFormat, LogLevel
from metastack.metrics import CONTENT_TYPE, render
from metastack.notify import Notifier
from metastack.serve import bind_tcp
from metastack.tasks import cancel_and_wait

log = logging.getLogger("metastack.runner")

EventLoop = Literal["auto", "asyncio", "uvloop"]
T = TypeVar("T")
READY_CHECK_SECONDS = 2.0  # a readiness check that takes longer says "not ready"
_HEALTH_LIMITS = Limits(max_header_bytes=8192, max_headers=50, max_body_bytes=0)
_TEXT = [(b"Content-Type", b"text/plain; charset=utf-8")]


class Service(Protocol):
    """What the runner runs: start serving, say whether it can do its job, drain."""

    async def start(self) -> None:
        """Open listeners and clients; raise MetastackError or OSError if it cannot
        (having closed what it opened)."""

    async def ready(self) -> bool:
        """Whether the service can do its job now (its upstream or database answers)."""

    async def stop(self, timeout: float) -> None:
        """Stop accepting; give requests in flight up to `timeout` seconds; close."""


class ServiceSettings(Protocol):
    """The runner's keys, present in every service's config section."""

    @property
    def event_loop(self) -> EventLoop: ...
    @property
    def log_level(self) -> LogLevel: ...
    @property
    def log_format(self) -> LogFormat: ...
    @property
    def metrics_listen(self) -> str: ...
    @property
    def shutdown_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How to run a service, whichever it is."""

    name: str
    event_loop: EventLoop = "auto"
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    metrics_listen: str = ""  # HOST:PORT of /metrics, /healthz, /readyz; "" = none
    shutdown_timeout: float = 5.0

    @classmethod
    def of(cls, name: str, settings: ServiceSettings) -> RunConfig:
        """The runner's part of a service's config section."""
        return cls(
            name,
            event_loop=settings.event_loop,
            log_level=settings.log_level,
            log_format=settings.log_format,
            metrics_listen=settings.metrics_listen,
            shutdown_timeout=settings.shutdown_timeout,
        )


def loop_factory(name: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop of an `event_loop` value: uvloop for `auto` when it is installed."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError("event_loop = uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_in_loop(name: EventLoop, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` to completion on a new event loop of the named kind."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main())


class HealthHandler:
    """`/metrics` (Prometheus text), `/healthz` (200 while the process lives) and
    `/readyz` (200 when the service can do its job, else 503)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def __call__(self, request: Request, peer: str) -> Response:
        if request.method not in (b"GET", b"HEAD"):
            return Response(405, b"Method Not Allowed", [*_TEXT, (b"Allow", b"GET, HEAD")])
        path = request.target.partition(b"?")[0]
        if path == b"/metrics":
            body = await asyncio.to_thread(render, self.runner.registry)
            return Response(200, b"OK", [(b"Content-Type", CONTENT_TYPE)], body)
        if path == b"/healthz":
            return Response(200, b"OK", list(_TEXT), b"ok\n")
        if path == b"/readyz":
            if await self.runner.ready():
                return Response(200, b"OK", list(_TEXT), b"ready\n")
            return Response(503, b"Service Unavailable", list(_TEXT), b"not ready\n")
        return Response(404, b"Not Found", list(_TEXT), b"/metrics, /healthz, /readyz\n")


class Runner:
    """Runs one service in the foreground until SIGTERM or SIGINT.

    `registry` is what `/metrics` shows; `metrics_sock`, when given, is an already bound
    listener for it (an API worker's share of the parent's); `notifier` defaults to the
    one systemd's environment names; `on_ready` runs after READY=1.
    """

    def __init__(
        self,
        config: RunConfig,
        service: Service,
        *,
        registry: CollectorRegistry | None = None,
        metrics_sock: socket.socket | None = None,
        notifier: Notifier | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics_sock = metrics_sock
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.on_ready = on_ready
        self.started = False
        self.stopping = False
        self.metrics_address: tuple[str, int] | None = None
        self._stop: asyncio.Event | None = None
        self._health: HttpServer | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def run(self) -> int:
        """Process entry point: 0 after a clean stop, 1 if the service cannot start."""
        try:
            run_in_loop(self.config.event_loop, self.serve)
        except (MetastackError, OSError) as exc:
            log.error("metastack %s: cannot start: %s", self.config.name, exc)
            return 1
        finally:
            self.notifier.close()
        return 0

    def request_stop(self) -> None:
        """Begin the drain, as SIGTERM does (call from the loop's thread)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        """Start, serve until told to stop, drain."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._stop.set)
        try:
            await self.startup()
            await self._stop.wait()
            await self.shutdown()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self._close_health(0.0)
            await cancel_and_wait(self._watchdog)

    async def startup(self) -> None:
        """Watchdog, metrics listener, the service, READY=1."""
        interval = self.notifier.watchdog_interval
        if interval is not None:
            self._watchdog = asyncio.create_task(self._ping(interval), name="watchdog")
        await self._open_health()
        await self.service.start()
        freeze_heap()
        self.started = True
        self.notifier.send("READY=1")
        if self.on_ready is not None:
            self.on_ready()

    async def shutdown(self) -> None:
        """STOPPING=1, not ready, drain the service within `shutdown_timeout`."""
        self.stopping = True
        self.notifier.send("STOPPING=1")
        log.info(
            "%s stopping: requests in flight get up to %g s",
            self.config.name,
            self.config.shutdown_timeout,
        )
        await self.service.stop(self.config.shutdown_timeout)
        await self._close_health(1.0)
        log.info("%s stopped", self.config.name)

    async def ready(self) -> bool:
        """Started, not stopping, and the service's own check passes in time."""
        if not self.started or self.stopping:
            return False
        try:
            return await asyncio.wait_for(self.service.ready(), READY_CHECK_SECONDS)
        except TimeoutError:
            return False
        except Exception:
            log.exception("readiness check of %s failed", self.config.name)
            return False

    async def _open_health(self) -> None:
        sock = self.metrics_sock
        if sock is None:
            if not self.config.metrics_listen:
                return
            host, port = parse_hostport(self.config.metrics_listen)
            sock = bind_tcp(host, port)[0]
            name = sock.getsockname()
            log.info("metrics listening on %s:%d", name[0], name[1])
        self._health = await HttpServer.start(HealthHandler(self), _HEALTH_LIMITS, sock)
        name = sock.getsockname()
        self.metrics_address = (str(name[0]), int(name[1]))

    async def _close_health(self, grace: float) -> None:
        health, self._health = self._health, None
        if health is not None:
            await health.close(grace)

    async def _ping(self, interval: float) -> None:
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)
