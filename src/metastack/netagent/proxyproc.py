"""Keep the namespace proxy process alive when the netagent is asked to run it.

The proxy runs in its own session, so it outlives a netagent restart (guests keep being
served); a restarted netagent adopts it from the pid file instead of starting another. It
writes its log to the netagent's stderr (the journal under systemd), never to a file.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from metastack.netns.dnsmasq import alive, cmdline
from metastack.netns.sockets import unix_socket_accepts

log = logging.getLogger("metastack.netagent")


class ProxyProcess:
    """`metastack proxy --config PATH`, started once and restarted whenever it is gone."""

    def __init__(self, config_path: str, control_socket: str, state_path: str) -> None:
        self.config_path = config_path
        self.control_socket = control_socket
        self.pidfile = Path(state_path) / "proxy.pid"
        self.argv = (sys.executable, "-m", "metastack", "proxy", "--config", config_path)
        self._child: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        """The running proxy's PID (ours or adopted), None when there is none."""
        if self._child is not None and self._child.poll() is None:
            return self._child.pid
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        argv = cmdline(pid)
        # A zombie has no command line; a recycled PID runs something else.
        if not alive(pid) or argv is None or self.config_path not in argv:
            return None
        return pid

    def ensure(self) -> bool:
        """Start the proxy if it is not running; True when it had to be (re)started."""
        if self.pid() is not None:
            return False
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self._child = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),  # the proxy logs to stderr; stdout joins it
            stderr=None,  # inherited: the netagent's stderr
            start_new_session=True,  # survives the netagent: guests stay served
        )
        self.pidfile.write_text(f"{self._child.pid}\n")
        log.warning("started the proxy (pid %d)", self._child.pid)
        return True

    def ready(self) -> bool:
        """True once the proxy's control socket accepts connections."""
        return unix_socket_accepts(self.control_socket)
