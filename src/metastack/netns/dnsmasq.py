"""dnsmasq as the DHCP server of a namespace: its files, command line and process (by PID)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from metastack.netns import exec as netns_exec
from metastack.netns.sockets import netns_path


@dataclass(frozen=True, slots=True)
class DhcpRange:
    """One IPv4 subnet served with static leases only; `tag` selects its options."""

    tag: str
    cidr: str


@dataclass(frozen=True, slots=True)
class DhcpHost:
    """A static lease."""

    mac: str
    hostname: str
    ip: str


@dataclass(frozen=True, slots=True)
class DhcpOption:
    """`tag:<tag>,<option>,<values...>`; `option` is a dnsmasq name (`option:router`) or code."""

    tag: str
    option: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsmasqConfig:
    """Everything one network's dnsmasq serves.

    Ranges and the interface are on the command line (a change restarts dnsmasq); hosts
    and options live in files that dnsmasq re-reads on SIGHUP.
    """

    netns: str
    interface: str
    ranges: tuple[DhcpRange, ...]
    hosts: tuple[DhcpHost, ...]
    options: tuple[DhcpOption, ...]
    lease_duration: int = 86400
    lease_max: int = 2**24


@dataclass(frozen=True, slots=True)
class DnsmasqFiles:
    """The files of one dnsmasq under its own directory."""

    directory: Path

    @property
    def pid(self) -> Path:
        return self.directory / "pid"

    @property
    def hosts(self) -> Path:
        return self.directory / "host"

    @property
    def opts(self) -> Path:
        return self.directory / "opts"


def render_hosts(config: DnsmasqConfig) -> str:
    """The --dhcp-hostsfile: `mac,hostname,ip` per static lease."""
    return "".join(f"{h.mac},{h.hostname},{h.ip}\n" for h in config.hosts)


def render_opts(config: DnsmasqConfig) -> str:
    """The --dhcp-optsfile: `tag:<tag>,<option>[,values]` per option."""
    return "".join(",".join((f"tag:{o.tag}", o.option, *o.values)) + "\n" for o in config.options)


def command_line(
    config: DnsmasqConfig, files: DnsmasqFiles, binary: str = "dnsmasq", user: str | None = None
) -> tuple[str, ...]:
    """dnsmasq's argv: DHCP only (no DNS), static leases, bound to the DHCP interface."""
    argv = [
        binary,
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--port=0",
        "--bind-interfaces",
        f"--interface={config.interface}",
        "--except-interface=lo",
        "--leasefile-ro",
        "--dhcp-authoritative",
        f"--pid-file={files.pid}",
        f"--dhcp-hostsfile={files.hosts}",
        f"--dhcp-optsfile={files.opts}",
        f"--dhcp-lease-max={config.lease_max}",
    ]
    if user:
        argv.append(f"--user={user}")
    for dhcp_range in config.ranges:
        net = ipaddress.IPv4Network(dhcp_range.cidr)
        argv.append(
            f"--dhcp-range=set:{dhcp_range.tag},{net.network_address},static,"
            f"{net.netmask},{config.lease_duration}s"
        )
    return tuple(argv)


def unsearchable_folder(path: str | Path) -> Path | None:
    """The first folder on the way to `path` (itself included, where it exists) that other
    users cannot enter. dnsmasq drops to an unprivileged user (`nobody` unless told
    otherwise) and re-reads its hosts and options files on every reload: past such a
    folder it could not, and every reload after a change would fail."""
    target = Path(path).absolute()
    for folder in (target, *target.parents):
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            continue  # made later, 0755
        if not mode & 0o001:
            return folder
    return None


def write_if_changed(path: Path, text: str) -> bool:
    """Write a file atomically unless it already holds `text`; True if it was written."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    scratch.chmod(0o644)  # dnsmasq re-reads it on SIGHUP after dropping privileges
    scratch.replace(path)
    return True


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _same_netns(pid: int, netns: str) -> bool:
    try:
        mine = os.stat(f"/proc/{pid}/ns/net")
        named = os.stat(netns_path(netns))
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def cmdline(pid: int) -> tuple[str, ...] | None:
    """The argv of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def find_running(files: DnsmasqFiles, argv: tuple[str, ...], netns: str) -> int | None:
    """The PID in the pid file if that process runs exactly `argv` inside `netns`."""
    pid = _read_pid(files.pid)
    if pid is None or not alive(pid):
        return None
    if cmdline(pid) != argv or not _same_netns(pid, netns):
        return None
    return pid


def pid_of(files: DnsmasqFiles) -> int | None:
    """The PID a pid file names, if that process is alive (whatever it runs)."""
    pid = _read_pid(files.pid)
    return pid if pid is not None and alive(pid) else None


def start(netns: str, argv: tuple[str, ...], files: DnsmasqFiles, timeout: float = 5.0) -> int:
    """Start dnsmasq in `netns`; it daemonises and writes its pid file. Returns its PID."""
    files.pid.unlink(missing_ok=True)
    # dnsmasq's parent exits once the daemon is set up, with a non-zero code on failure.
    netns_exec.run(("ip", "netns", "exec", netns, *argv), timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        pid = _read_pid(files.pid)
        if pid is not None and alive(pid):
            return pid
        if time.monotonic() > deadline:
            raise netns_exec.NetnsError(f"dnsmasq in {netns} wrote no pid file {files.pid}")
        time.sleep(0.02)


def reload(pid: int) -> None:
    """Make dnsmasq re-read its hosts and options files."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)


def stop(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; NetnsError if it still runs after that."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        else:
            return
    raise netns_exec.NetnsError(f"process {pid} survived SIGKILL")
