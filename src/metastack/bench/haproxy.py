"""haproxy as upstream runs it: one per DHCP or router namespace, in front of our agent."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from metastack.netns.exec import NetnsError, run

HAPROXY = "/usr/sbin/haproxy"


@dataclass(frozen=True, slots=True)
class Site:
    """One namespace proxy: its namespace, bind address and the id it stamps."""

    netns: str
    bind: str  # "169.254.169.254:80" (DHCP) or "0.0.0.0:9697" (router)
    kind: str  # "Network" or "Router"
    uuid: str


def render(site: Site, agent_socket: str, pidfile: Path, user: str, group: str) -> str:
    """neutron's haproxy template, line for line.

    Described in docs/wire-contracts.md#upstream-haproxy.
    """
    other = "Router" if site.kind == "Network" else "Network"
    return f"""global
    log /dev/log local0 info
    log-tag haproxy-metadata-proxy-{site.uuid}
    user {user}
    group {group}
    maxconn 1024
    nbthread 2
    pidfile {pidfile}
    daemon

defaults
    log global
    mode http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries 3
    timeout http-request 30s
    timeout connect 30s
    timeout client 32s
    timeout server 32s
    timeout http-keep-alive 30s

listen listener
    bind {site.bind}
    server metadata {agent_socket}
    http-request del-header X-Neutron-{other}-ID
    http-request set-header X-Neutron-{site.kind}-ID {site.uuid}
"""


def _user_and_group() -> tuple[str, str]:
    import grp

    for group in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            grp.getgrnam(group)
            return "nobody", group
    return "nobody", "nobody"


def identity() -> dict[str, str]:
    """The agent settings naming who haproxy runs as (neutron's `metadata_proxy_user`)."""
    user, group = _user_and_group()
    return {"metadata_proxy_user": user, "metadata_proxy_group": group}


def start(
    sites: list[Site], agent_socket: str, directory: Path, started: dict[str, tuple[int, str]]
) -> None:
    """Start one daemonised haproxy per site (`ip netns exec NS haproxy -f CONF`).

    Fills `started` (netns -> PID from its pid file, config path) as they come up, so the
    caller can stop them whatever happens; raises NetnsError naming the sites that failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    user, group = _user_and_group()
    errors: list[str] = []

    def one(site: Site) -> None:
        conf = directory / f"{site.uuid}.conf"
        pidfile = directory / f"{site.uuid}.pid.haproxy"
        conf.write_text(render(site, agent_socket, pidfile, user, group))
        try:
            run(["ip", "netns", "exec", site.netns, HAPROXY, "-f", str(conf)], timeout=30)
            pid = _wait_pid(pidfile)
        except NetnsError as exc:
            errors.append(f"{site.netns}: {exc}")
            return
        started[site.netns] = (pid, str(conf))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, sites))
    if errors:
        raise NetnsError("haproxy did not start: " + "; ".join(errors[:5]))


def _wait_pid(pidfile: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        time.sleep(0.02)
    raise NetnsError(f"no live pid in {pidfile} after {timeout:.0f} s")
