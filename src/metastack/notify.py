"""systemd's notification protocol (`Type=notify`): READY=1, STOPPING=1, WATCHDOG=1.

A datagram to the unix socket named by NOTIFY_SOCKET (`@name` is in the abstract
namespace). The variables are read once and removed from the environment, so no child
(an API worker, the proxy the netagent runs, dnsmasq) speaks for the service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends notifications to systemd when started by it; does nothing otherwise."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, and remove them."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec_text = env.get("WATCHDOG_USEC", "")
        pid_text = env.get("WATCHDOG_PID", "")
        for name in _VARIABLES:
            env.pop(name, None)
        usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        if pid_text and pid_text != str(os.getpid()):
            usec = None  # the watchdog is another process's
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None without one."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, message: str) -> bool:
        """Send one notification (`READY=1`, `STOPPING=1`, ...); False if it did not go."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            log.warning("sd_notify %s to %s failed: %s", message.split("\n")[0], self.address, exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket (a later send opens another)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
