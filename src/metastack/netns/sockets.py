"""Listening sockets created inside a network namespace: the only place that enters one.

Threading: `setns(CLONE_NEWNET)` switches only the calling thread. The proxy calls
:func:`listen_in_netns` synchronously from its event-loop thread; the switch, socket,
bind, listen and switch back take tens of microseconds, and no other coroutine can run
on that thread in between, so nothing else is ever created in the wrong namespace.
Other threads (executors) never leave the original namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from metastack.netns.exec import NetnsError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
# Not exported by Python 3.11's socket module on every build; values from <linux/in.h>, <in6.h>.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = getattr(socket, "IPV6_FREEBIND", 78)

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> Path:
    """Path of a named namespace as `ip netns add` creates it."""
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"invalid namespace name {name!r}")
    return NETNS_RUN_DIR / name


def _make_socket(
    host: str, port: int, family: socket.AddressFamily, backlog: int, interface: str | None
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Bind 169.254.169.254 or fe80::a9fe:a9fe before the address is configured (or
            # while it is still tentative after DAD).
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            scope = socket.if_nametoindex(interface) if interface else 0
            sock.bind((host, port, 0, scope))
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def unix_socket_accepts(path: str | os.PathLike[str]) -> bool:
    """True when a unix stream socket at `path` accepts a connection (a service is up)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def listen_in_netns(
    netns: str | None,
    host: str,
    port: int,
    family: socket.AddressFamily | None = None,
    backlog: int = 4096,
    *,
    interface: str | None = None,
) -> socket.socket:
    """Create a non-blocking listening TCP socket bound to host:port inside `netns`.

    `netns` None means the caller's namespace. `interface` names the device whose index
    is the scope of an IPv6 link-local `host` (looked up inside the namespace). The socket
    stays in `netns` after the calling thread has returned to its own namespace.
    """
    if family is None:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    if netns is None:
        return _make_socket(host, port, family, backlog, interface)
    with _inside(netns):
        try:
            return _make_socket(host, port, family, backlog, interface)
        except OSError as exc:
            raise NetnsError(f"listen on {host}:{port} in {netns}: {exc}") from exc


def set_sysctls(netns: str, values: dict[str, str]) -> None:
    """Write per-namespace sysctls (`net.ipv6.conf.default.disable_ipv6` style keys)
    inside `netns`: /proc/sys/net resolves against the calling thread's namespace."""
    with _inside(netns):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as handle:
                    handle.write(value)
            except OSError as exc:
                raise NetnsError(f"sysctl {key}={value} in {netns}: {exc.strerror}") from exc


def read_net_file(netns: str, name: str) -> str:
    """A /proc/net file (`netstat`, `snmp`, ...) as seen from inside `netns`."""
    with _inside(netns):
        try:
            return Path(f"/proc/thread-self/net/{name}").read_text()
        except OSError as exc:
            raise NetnsError(f"/proc/net/{name} in {netns}: {exc.strerror}") from exc


@contextlib.contextmanager
def _inside(netns: str) -> Iterator[None]:
    """Run the body with this thread inside `netns`, and back in its own namespace after."""
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"namespace {netns}: {exc.strerror}") from exc
    try:
        origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise NetnsError(f"setns into {netns}: {exc.strerror}") from exc
        try:
            yield
        finally:
            return_to(origin, netns)
    finally:
        os.close(target)
        os.close(origin)


def return_to(origin: int, netns: str) -> None:
    """setns this thread back into `origin` (an open namespace descriptor) after work in
    `netns`. A thread stuck in a guest's namespace would open everything there next:
    if it cannot come back, stopping the process is the only safe answer."""
    try:
        _setns(origin)
    except OSError as exc:
        os.write(2, f"fatal: cannot return from namespace {netns}: {exc}\n".encode())
        os._exit(70)
