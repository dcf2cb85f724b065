"""`metastack api` process model: migrate, bind, then serve in one or several worker processes.

The parent binds every listener (one SO_REUSEPORT socket per worker, so the kernel
spreads connections; the metrics listener too), forks the workers and restarts any that
dies (:mod:`metastack.supervisor`); SIGTERM/SIGINT stop them all. Each worker is an
:class:`ApiWorker` under the common :class:`~metastack.runner.Runner`. With one worker
the parent serves itself. The workers count their metrics in files of a private
directory, which any worker's `/metrics` adds up, removed when the API stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from metastack.config import ApiConfig, is_loopback, parse_hostport
from metastack.errors import MetastackError, StoreUnavailable
from metastack.logs import setup_logging
from metastack.metrics import (
    MetadataMetrics,
    forget_worker,
    new_registry,
    shared_registry,
    use_worker_files,
)
from metastack.notify import Notifier
from metastack.runner import RunConfig, Runner
from metastack.serve import LISTEN_BACKLOG, bind_tcp, start_site
from metastack.supervisor import Supervisor
from metastack.tasks import cancel_and_wait
from metastack.tls import TlsFileError, server_context

if TYPE_CHECKING:
    from metastack.store.sql import SqlStore
    from metastack.store.watch import RevisionWatcher

log = logging.getLogger("metastack.api")

Listeners = dict[str, list[socket.socket]]  # api name -> one socket per worker
STOP_MARGIN_SECONDS = 5.0  # past shutdown_timeout, before a worker is killed
DB_RETRY_SECONDS = 2.0


def prepare_database(
    config: ApiConfig,
    *,
    attempts: int | None = None,
    on_wait: Callable[[], object] = lambda: None,
) -> None:
    """Bring the schema to the newest migration, waiting for the database to come up
    (`on_wait` runs before each pause: the watchdog is fed meanwhile)."""
    from metastack.store.migrate import upgrade

    tried = 0
    while True:
        tried += 1
        try:
            upgrade(config.database_url)
            return
        except StoreUnavailable as exc:
            if attempts is not None and tried >= attempts:
                raise
            log.warning("database not ready (%s); retrying in %.0f s", exc, DB_RETRY_SECONDS)
            on_wait()
            time.sleep(DB_RETRY_SECONDS)


def bind_listeners(config: ApiConfig) -> Listeners:
    """Bind every enabled API's address once per worker."""
    listeners: Listeners = {}
    addresses = {"control": config.control_listen, "metadata": config.metadata_listen}
    for api in config.enabled_apis:
        host, port = parse_hostport(addresses[api])
        listeners[api] = bind_tcp(host, port, config.workers)
        bound = listeners[api][0].getsockname()
        scheme = "https" if config.tls_cert_file else "http"
        log.info("%s API listening on %s:%d (%s)", api, bound[0], bound[1], scheme)
    if config.metrics_listen and config.workers > 1:
        # One worker: its runner binds it. Several: they share it, as the APIs.
        host, port = parse_hostport(config.metrics_listen)
        listeners["metrics"] = bind_tcp(host, port, config.workers)
        bound = listeners["metrics"][0].getsockname()
        log.info("metrics listening on %s:%d", bound[0], bound[1])
    return listeners


def listener_contexts(config: ApiConfig) -> dict[str, ssl.SSLContext]:
    """The TLS context of each API listener ({} without `tls_cert_file`): the same
    certificate on both; the metadata API also asks for a client certificate when
    `tls_client_ca_file` is set. TlsFileError names the option of a file that is unusable."""
    if not config.tls_cert_file or not config.tls_key_file:
        return {}
    cert, key = config.tls_cert_file, config.tls_key_file
    return {
        "control": server_context(cert, key, prefix="api."),
        "metadata": server_context(
            cert, key, client_ca_file=config.tls_client_ca_file, prefix="api."
        ),
    }


class ApiWorker:
    """One worker's service: the store, the metadata API and/or the control API."""

    def __init__(
        self, config: ApiConfig, sockets: dict[str, socket.socket], metrics: MetadataMetrics
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.metrics = metrics
        self.store: SqlStore | None = None
        self.watcher: RevisionWatcher | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._closers: list[Callable[[float], Awaitable[None]]] = []

    async def start(self) -> None:
        """Open the store and its revision watcher (one per worker, shared by the metadata
        cache and the change feed), prune the feed now and then, start the APIs."""
        from metastack.api.control import make_control_app
        from metastack.api.control.agents import scheduling_policy
        from metastack.api.metadata_app import MetadataServer
        from metastack.api.retention import prune_forever
        from metastack.store.sql import SqlStore
        from metastack.store.watchers import watcher_for

        store = self.store = SqlStore(
            self.config.database_url,
            scheduling=scheduling_policy(self.config),
            pool=self.config.pool(),
        )
        watcher = self.watcher = watcher_for(store)
        try:
            contexts = listener_contexts(self.config)
            await watcher.start()
            self._pruner = asyncio.create_task(prune_forever(store, self.config.change_retention))
            if "metadata" in self.sockets:
                metadata = MetadataServer(self.config, store, watcher=watcher, metrics=self.metrics)
                await metadata.start(
                    self.sockets["metadata"], LISTEN_BACKLOG, ssl_context=contexts.get("metadata")
                )
                self._closers.append(metadata.close)
            if "control" in self.sockets:
                cleanups: list[Callable[[], Awaitable[None]]] = []
                await start_site(
                    make_control_app(self.config, store, watcher=watcher),
                    self.sockets["control"],
                    cleanups,
                    self.config.shutdown_timeout,
                    ssl_context=contexts.get("control"),
                )
                self._closers.append(lambda grace: cleanups[0]())
        except BaseException:
            await self.stop(0.0)
            raise

    async def ready(self) -> bool:
        """The database answers (the revision counter is read)."""
        if self.store is None:
            return False
        try:
            await asyncio.to_thread(self.store.current_revision)
        except Exception as exc:
            log.warning("not ready: the database does not answer: %s", exc)
            return False
        return True

    async def stop(self, timeout: float) -> None:
        """Both APIs stop accepting at once and drain together."""
        closers, self._closers = self._closers, []
        await asyncio.gather(*(close(timeout) for close in closers))
        await cancel_and_wait(self._pruner)
        if self.watcher is not None:
            await self.watcher.close()
            self.watcher = None
        if self.store is not None:
            self.store.close()
            self.store = None


def run_worker(
    config: ApiConfig,
    sockets: dict[str, socket.socket],
    metrics_dir: str | None,
    index: int,
    on_ready: Callable[[], None],
) -> int:
    """One of several workers, under the runner until SIGTERM; its exit code. It counts in
    the shared files (when there is a metrics listener) and leaves systemd to the parent."""
    registry = None
    if metrics_dir is not None:
        use_worker_files(metrics_dir, index)
        registry = shared_registry(metrics_dir)
    apis = {name: sock for name, sock in sockets.items() if name != "metrics"}
    return Runner(
        RunConfig.of("api", config),
        ApiWorker(config, apis, MetadataMetrics()),
        registry=registry,
        metrics_sock=sockets.get("metrics"),
        notifier=Notifier(None),
        on_ready=on_ready,
    ).run()


def supervise(config: ApiConfig, listeners: Listeners, notifier: Notifier) -> int:
    """Fork the workers, restart the ones that die, stop them all on SIGTERM/SIGINT."""
    metrics_dir = (
        tempfile.mkdtemp(prefix="metastack-api-metrics-", dir=os.environ.get("RUNTIME_DIRECTORY"))
        if "metrics" in listeners
        else None
    )

    def worker(index: int, on_ready: Callable[[], None]) -> int:
        sockets = {api: socks[index] for api, socks in listeners.items()}
        return run_worker(config, sockets, metrics_dir, index, on_ready)

    def close_listeners() -> None:
        for socks in listeners.values():
            for sock in socks:
                sock.close()

    def forget(index: int) -> None:
        if metrics_dir is not None:
            forget_worker(metrics_dir, index)

    try:
        return Supervisor(
            config.workers,
            worker,
            notifier=notifier,
            stop_timeout=config.shutdown_timeout + STOP_MARGIN_SECONDS,
            close_listeners=close_listeners,
            on_exit=forget,
        ).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def startup_problem(config: ApiConfig) -> str | None:
    """Why a valid config must still not start (exit status 2), naming the key; else None."""
    if (
        "metadata" in config.enabled_apis
        and config.service_metadata_proxy
        and not config.metadata_proxy_shared_secret
    ):
        return (
            "api.metadata_proxy_shared_secret is empty; set the secret the "
            "metadata agents sign with (there is no default)"
        )
    try:
        listener_contexts(config)
    except TlsFileError as exc:
        return f"{exc.key}: {exc}"
    host, _ = parse_hostport(config.control_listen)
    if "control" in config.enabled_apis and not config.admin_token and not is_loopback(host):
        return (
            f"api.admin_token is not set, and control_listen {config.control_listen} is not "
            "a loopback address: anyone who reaches it could change every instance's "
            "identity; set admin_token (or admin_token_file), or listen on 127.0.0.1"
        )
    return None


def run(config: ApiConfig) -> int:
    """Entry point of `metastack api`."""
    setup_logging(config.log_level, config.log_format)
    problem = startup_problem(config)
    if problem is not None:
        print(f"metastack api: {problem}", file=sys.stderr)
        return 2
    notifier = Notifier.from_environ()
    try:
        prepare_database(config, on_wait=lambda: notifier.send("WATCHDOG=1"))
        listeners = bind_listeners(config)
    except (MetastackError, OSError) as exc:
        print(f"metastack api: {exc}", file=sys.stderr)
        return 1
    if config.workers == 1:
        sockets = {api: socks[0] for api, socks in listeners.items()}
        return run_worker_alone(config, sockets, notifier)
    return supervise(config, listeners, notifier)


def run_worker_alone(
    config: ApiConfig, sockets: dict[str, socket.socket], notifier: Notifier
) -> int:
    """One worker: the parent serves, and speaks to systemd itself."""
    registry = new_registry()
    service = ApiWorker(config, sockets, MetadataMetrics(registry))
    return Runner(RunConfig.of("api", config), service, registry=registry, notifier=notifier).run()
