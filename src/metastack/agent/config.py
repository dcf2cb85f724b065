"""`[agent]` settings: option names follow neutron's metadata_agent.ini where one exists."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from metastack.config import DEFAULT_STATE_PATH, _Section, http_urls, load_section, url_list

SocketMode = Literal["deduce", "user", "group", "all"]
# Upstream's octal modes for metadata_proxy_socket_mode.
SOCKET_MODES = {"user": 0o644, "group": 0o664, "all": 0o666}


class AgentConfig(_Section):
    """`metastack agent`: the unix-socket metadata agent of a network node."""

    metadata_proxy_socket: str = f"{DEFAULT_STATE_PATH}/metadata_proxy"
    # Default `all`: proxies in every namespace must connect, whatever user they run as.
    metadata_proxy_socket_mode: SocketMode = "all"
    metadata_proxy_user: str = ""
    metadata_proxy_group: str = ""
    metadata_backlog: int = Field(4096, ge=1)
    metadata_proxy_shared_secret: str = ""
    nova_metadata_host: str = "127.0.0.1"
    nova_metadata_port: int = Field(8775, ge=1, le=65535)
    nova_metadata_protocol: Literal["http", "https"] = "http"
    # Several metadata API base URLs, requests spread over those that answer probes;
    # overrides the three above.
    metadata_endpoints: list[str] = Field(default_factory=list)
    nova_metadata_insecure: bool = False
    auth_ca_cert: str | None = None
    nova_client_cert: str = ""
    nova_client_priv_key: str = ""
    # One control API base URL, or several (spread and failed over as metadata_endpoints).
    control_url: str | list[str] = "http://127.0.0.1:8774"
    admin_token: str | None = None
    # Whole-request deadline (lookup + forward): past it the guest gets a 503.
    upstream_timeout: float = Field(15.0, gt=0)
    # A connect that takes longer fails over to the next endpoint.
    upstream_connect_timeout: float = Field(3.0, gt=0)
    # Requests sent to each metadata API endpoint at once; the rest wait in arrival order.
    # 0: no limit.
    upstream_concurrency: int = Field(32, ge=0)
    # Upper bound on a cached lookup's age; the change feed invalidates sooner. 0 = no cache.
    cache_expiration: float = Field(60.0, ge=0)
    cache_size: int = Field(10000, ge=1)
    # Fetch a network's instance ports once its changes settle, before its guests ask:
    # "seen" for networks this agent has answered for, "all" for every network the change
    # feed names (one node or a small site), "off" never.
    prefetch_ports: Literal["off", "seen", "all"] = "seen"
    # Long-poll wait of the change feed; the cache is bypassed once the feed is silent
    # for longer than this plus FEED_GRACE seconds.
    feed_wait: int = Field(10, ge=1, le=60)

    @field_validator("metadata_endpoints")
    @classmethod
    def _endpoints_are_urls(cls, endpoints: list[str]) -> list[str]:
        for url in endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in endpoints]

    @field_validator("control_url")
    @classmethod
    def _control_is_url(cls, url: str | list[str]) -> str | list[str]:
        return http_urls(url)

    @field_validator("metadata_proxy_shared_secret", "admin_token")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        if value is not None and any(ch in value for ch in "\r\n"):
            raise ValueError("must not contain line breaks")
        return value

    def endpoints(self) -> list[str]:
        """Metadata API base URLs in failover order."""
        if self.metadata_endpoints:
            return list(self.metadata_endpoints)
        host = self.nova_metadata_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return [f"{self.nova_metadata_protocol}://{host}:{self.nova_metadata_port}"]

    def control_urls(self) -> list[str]:
        """Control API base URLs (one or several)."""
        return url_list(self.control_url)

    def socket_mode(self) -> int:
        """The octal mode for the listening socket, `deduce` resolved as upstream does."""
        if self.metadata_proxy_socket_mode != "deduce":
            return SOCKET_MODES[self.metadata_proxy_socket_mode]
        return SOCKET_MODES[deduce_socket_mode(self.metadata_proxy_user, self.metadata_proxy_group)]


def _is_effective(name: str, lookup_id: Any, effective: int) -> bool:
    if name.isdigit():
        return int(name) == effective
    try:
        return int(lookup_id(name)) == effective
    except KeyError:
        return False


def deduce_socket_mode(user: str, group: str) -> Literal["user", "group", "all"]:
    """Upstream's `deduce`: owner only when the proxies run as us, group when they share it."""
    euid = os.geteuid()
    if not user or user in ("0", "root") or _is_effective(user, _uid, euid):
        return "user"
    if not group or _is_effective(group, _gid, os.getegid()):
        return "group"
    return "all"


def _uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def load_agent_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """File section `[agent]`, then `METASTACK_AGENT_*`, then flag overrides."""
    return load_section(AgentConfig, "agent", path, environ, overrides)
