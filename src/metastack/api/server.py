"""`metastack api` process model: migrate, bind, then serve in one or several worker processes.

The parent binds every listener (one SO_REUSEPORT socket per worker, so the kernel
spreads connections), forks the workers and restarts any that dies; SIGTERM/SIGINT
stop them all. With one worker the parent serves itself.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from types import FrameType

from metastack.config import ApiConfig, is_loopback, parse_hostport
from metastack.errors import MetastackError, StoreUnavailable
from metastack.heap import freeze_heap
from metastack.serve import (
    LISTEN_BACKLOG,
    SHUTDOWN_TIMEOUT,
    bind_tcp,
    run_loop,
    setup_logging,
    start_site,
    wait_for_stop,
)

log = logging.getLogger("metastack.api")

Listeners = dict[str, list[socket.socket]]  # api name -> one socket per worker
STOP_GRACE_SECONDS = 10.0
DB_RETRY_SECONDS = 2.0


def prepare_database(config: ApiConfig, *, attempts: int | None = None) -> None:
    """Bring the schema to the newest migration, waiting for the database to come up."""
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
            time.sleep(DB_RETRY_SECONDS)


def bind_listeners(config: ApiConfig) -> Listeners:
    """Bind every enabled API's address once per worker."""
    listeners: Listeners = {}
    addresses = {"control": config.control_listen, "metadata": config.metadata_listen}
    for api in config.enabled_apis:
        host, port = parse_hostport(addresses[api])
        listeners[api] = bind_tcp(host, port, config.workers)
        bound = listeners[api][0].getsockname()
        log.info("%s API listening on %s:%d", api, bound[0], bound[1])
    return listeners


async def serve_worker(config: ApiConfig, sockets: dict[str, socket.socket]) -> int:
    """One worker: open the store, serve the apps on their sockets until told to stop."""
    from metastack.api.control import make_control_app
    from metastack.api.control.agents import scheduling_policy
    from metastack.api.metadata_app import MetadataServer
    from metastack.store.sql import SqlStore

    store = SqlStore(config.database_url, scheduling=scheduling_policy(config))
    cleanups: list[Callable[[], Awaitable[None]]] = []
    try:
        if "metadata" in sockets:
            metadata = MetadataServer(config, store)
            await metadata.start(sockets["metadata"], LISTEN_BACKLOG)
            cleanups.append(lambda: metadata.close(SHUTDOWN_TIMEOUT))
        if "control" in sockets:
            await start_site(make_control_app(config, store), sockets["control"], cleanups)
        freeze_heap()
        await wait_for_stop()
    finally:
        for cleanup in reversed(cleanups):
            await cleanup()
        store.close()
    return 0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, even by SIGKILL: orphaned
    workers would keep serving (stale code, old config) beside a restarted API."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def _spawn(config: ApiConfig, listeners: Listeners, index: int) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: default signals, its own sockets, its own event loop
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent(parent)
        sockets = {api: socks[index] for api, socks in listeners.items()}
        code = run_loop(lambda: serve_worker(config, sockets))
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        os._exit(code)


def supervise(config: ApiConfig, listeners: Listeners) -> int:
    """Fork the workers, restart the ones that die, stop them all on SIGTERM/SIGINT."""
    workers: dict[int, int] = {}  # pid -> worker index
    started: dict[int, float] = {}
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(config.workers):
            pid = _spawn(config, listeners, index)
            workers[pid] = index
            started[index] = time.monotonic()
        while True:
            pid, status = os.wait()
            if pid not in workers:
                continue
            index = workers.pop(pid)
            log.warning("worker %d (pid %d) exited with status %d; restarting", index, pid, status)
            if time.monotonic() - started[index] < 1.0:
                time.sleep(1.0)  # a worker that dies at once would otherwise spin
            pid = _spawn(config, listeners, index)
            workers[pid] = index
            started[index] = time.monotonic()
    except _Stop:
        log.info("stopping %d workers", len(workers))
        # Our copies of the listeners would keep accepting into a queue nobody serves.
        for socks in listeners.values():
            for sock in socks:
                sock.close()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_workers(workers)
    return 0


def _stop_workers(workers: dict[int, int]) -> None:
    for pid in workers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    remaining = set(workers)
    while remaining and time.monotonic() < deadline:
        for pid in list(remaining):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                remaining.discard(pid)
        time.sleep(0.05)
    for pid in remaining:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


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
    setup_logging()
    problem = startup_problem(config)
    if problem is not None:
        print(f"metastack api: {problem}", file=sys.stderr)
        return 2
    try:
        prepare_database(config)
        listeners = bind_listeners(config)
    except (MetastackError, OSError) as exc:
        print(f"metastack api: {exc}", file=sys.stderr)
        return 1
    if config.workers == 1:
        sockets = {api: socks[0] for api, socks in listeners.items()}
        return run_loop(lambda: serve_worker(config, sockets))
    return supervise(config, listeners)
