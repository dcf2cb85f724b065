"""Worker processes of one service (the API's): fork them, restart any that dies, stop them.

The parent binds every listener before forking, so the workers share them (one
SO_REUSEPORT socket each) and the kernel spreads connections. The parent speaks for the
service to systemd: READY=1 once every worker has said it serves, WATCHDOG=1 while it
supervises, STOPPING=1 at SIGTERM or SIGINT, after which each worker drains (SIGTERM)
and whatever is left after `stop_timeout` is killed. uvicorn's Multiprocess supervisor is
the model: the workers run the same :class:`~metastack.runner.Runner` as any service.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

from metastack.notify import Notifier

log = logging.getLogger("metastack.supervisor")

# A worker's main function: its index and a callback to run once it serves; its exit code.
WorkerMain = Callable[[int, Callable[[], None]], int]
PR_SET_PDEATHSIG = 1
RESPAWN_PAUSE = 1.0  # a worker that dies within this of its start is restarted after it
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, even by SIGKILL: orphaned
    workers would keep serving (stale code, old config) beside a restarted service."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


class Supervisor:
    """Runs `count` workers of `target` until SIGTERM or SIGINT."""

    def __init__(
        self,
        count: int,
        target: WorkerMain,
        *,
        notifier: Notifier,
        stop_timeout: float,
        close_listeners: Callable[[], None] = lambda: None,
        on_exit: Callable[[int], None] = lambda index: None,
    ) -> None:
        self.count = count
        self.target = target
        self.notifier = notifier
        self.stop_timeout = stop_timeout
        self.close_listeners = close_listeners
        self.on_exit = on_exit
        self.workers: dict[int, int] = {}  # pid -> index
        self._started: dict[int, float] = {}
        self._ready: set[int] = set()
        self._announced = False
        self._stopping = False

    def run(self) -> int:
        """Supervise until told to stop; 0 after a clean stop."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        pipes = (ready_r, ready_w, wake_r, wake_w)
        try:
            for index in range(self.count):
                self._spawn(index, ready_w, pipes)
            self._loop(ready_r, wake_r, ready_w, pipes)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._stop_workers()
            for fd in pipes:
                os.close(fd)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self._stopping = True

    def _loop(self, ready_r: int, wake_r: int, ready_w: int, pipes: tuple[int, ...]) -> None:
        interval = self.notifier.watchdog_interval
        next_ping = time.monotonic()
        while not self._stopping:
            if interval is not None and time.monotonic() >= next_ping:
                self.notifier.send("WATCHDOG=1")
                next_ping = time.monotonic() + interval
            timeout = None if interval is None else max(0.0, next_ping - time.monotonic())
            with contextlib.suppress(InterruptedError):
                select.select([ready_r, wake_r], [], [], timeout)
            _drain(wake_r)
            self._read_ready(ready_r)
            self._reap(ready_w, pipes)
        log.info("stopping %d workers", len(self.workers))
        self.notifier.send("STOPPING=1")
        # Our copies of the listeners would keep accepting into a queue nobody serves.
        self.close_listeners()

    def _read_ready(self, ready_r: int) -> None:
        for line in _drain(ready_r).split():
            self._ready.add(int(line))
        if not self._announced and len(self._ready) >= self.count:
            self._announced = True
            self.notifier.send("READY=1")
            log.info("%d workers serving", self.count)

    def _reap(self, ready_w: int, pipes: tuple[int, ...]) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            if index is None:
                continue
            self.on_exit(index)
            if self._stopping:
                continue
            log.warning("worker %d (pid %d) exited with status %d; restarting", index, pid, status)
            if time.monotonic() - self._started[index] < RESPAWN_PAUSE:
                time.sleep(RESPAWN_PAUSE)  # a worker that dies at once would otherwise spin
            self._spawn(index, ready_w, pipes)

    def _spawn(self, index: int, ready_w: int, pipes: tuple[int, ...]) -> None:
        parent = os.getpid()
        # Blocked across fork: a signal must not reach the child's copy of our handlers.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.workers[pid] = index
            self._started[index] = time.monotonic()
            return
        code = 1
        try:  # the child: default signals, no wakeup fd, its own event loop
            signal.set_wakeup_fd(-1)
            for signum in _SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            die_with_parent(parent)
            for fd in pipes:
                if fd != ready_w:
                    os.close(fd)
            code = self.target(index, lambda: _announce(ready_w, index))
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            os._exit(code)

    def _stop_workers(self) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self.workers and time.monotonic() < deadline:
            for pid in list(self.workers):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.on_exit(self.workers.pop(pid))
            time.sleep(0.05)
        for pid in list(self.workers):
            log.warning("worker pid %d did not stop in %g s; killing it", pid, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.on_exit(self.workers.pop(pid))


def _announce(ready_w: int, index: int) -> None:
    with contextlib.suppress(OSError):
        os.write(ready_w, f"{index}\n".encode())


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
