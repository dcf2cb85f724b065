"""`[agent]` settings: option names follow neutron's metadata_agent.ini where one exists."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from metastack.config import (
    DEFAULT_STATE_PATH,
    EventLoopKey,
    LogFormatKey,
    LogLevelKey,
    MetricsListen,
    ShutdownTimeout,
    _Section,
    admin_token_from_file,
    http_urls,
    load_section,
    single_line,
    url_list,
)

SocketMode = Literal["deduce", "user", "group", "all"]
# Upstream's octal modes for metadata_proxy_socket_mode.
SOCKET_MODES = {"user": 0o644, "group": 0o664, "all": 0o666}


class AgentConfig(_Section):
    """`metastack agent`: the unix-socket metadata agent of a network node."""

    metadata_proxy_socket: str = Field(
        f"{DEFAULT_STATE_PATH}/metadata_proxy",
        description="the unix socket the proxies connect to",
    )
    metadata_proxy_socket_mode: SocketMode = Field(
        "deduce",
        description="`user` 0644, `group` 0664, `all` 0666; `deduce` as neutron: `user` when "
        "`metadata_proxy_user` is empty, `0`, `root` or the agent's effective user, else "
        "`group` when `metadata_proxy_group` is empty or the agent's effective group, else "
        "`all`",
    )
    metadata_proxy_user: str = Field(
        "", description="user (name or id) the proxies run as, for `deduce`"
    )
    metadata_proxy_group: str = Field(
        "", description="group (name or id) the proxies run as, for `deduce`"
    )
    metadata_backlog: int = Field(
        4096, ge=1, description="listen backlog (honoured; capped by `net.core.somaxconn`)"
    )
    metadata_proxy_shared_secret: str = Field(
        "", repr=False, description="HMAC key, the same as the API's"
    )
    nova_metadata_host: str = Field("127.0.0.1", description="the metadata API's host")
    nova_metadata_port: int = Field(8775, ge=1, le=65535, description="the metadata API's port")
    nova_metadata_protocol: Literal["http", "https"] = Field(
        "http", description="`http` or `https` to the metadata API"
    )
    metadata_endpoints: list[str] = Field(
        default_factory=list,
        description="several metadata API base URLs; requests are spread over those that "
        "answer health probes (every 0.25 s), a dead one is dropped within a second and "
        "taken back when it answers (overrides the three above)",
    )
    nova_metadata_insecure: bool = Field(
        False, description="HTTPS to the API without verifying its certificate"
    )
    auth_ca_cert: str | None = Field(None, description="CA bundle for HTTPS to the API")
    nova_client_cert: str = Field("", description="client certificate for HTTPS to the API")
    nova_client_priv_key: str = Field(
        "", description="client certificate's key for HTTPS to the API"
    )
    control_url: str | list[str] = Field(
        "http://127.0.0.1:8774",
        description="control API for lookups and the change feed: one base URL or a list "
        "(spread and failed over as `metadata_endpoints`)",
    )
    control_ca_file: str | None = Field(
        None,
        description="PEM CA bundle that verifies an https `control_url` (the system CAs "
        "without it)",
    )
    admin_token: str | None = Field(None, repr=False, description="the control API's `admin_token`")
    admin_token_file: str | None = Field(
        None,
        description="a file holding `admin_token`, read at start (trailing newline "
        "stripped); not together with `admin_token`",
    )
    upstream_timeout: float = Field(
        15.0, gt=0, description="seconds for lookup + forward; past it the guest gets 503"
    )
    upstream_connect_timeout: float = Field(
        3.0, gt=0, description="a slower connect fails over to the next endpoint"
    )
    upstream_concurrency: int = Field(
        32,
        ge=0,
        description="requests in flight to each API endpoint at once; the rest wait in "
        "arrival order (their wait counts in `upstream_timeout`); a request still unanswered "
        "after 0.5 s gives its turn up, so a slow one (a slow vendor data target) holds the "
        "others back 0.5 s at most; 0 = no limit",
    )
    cache_expiration: float = Field(
        60.0,
        ge=0,
        description="upper bound on a cached lookup's age (s); the change feed invalidates "
        "sooner; 0 = no cache",
    )
    cache_size: int = Field(10000, ge=1, description="cached lookups")
    prefetch_ports: Literal["off", "seen", "all"] = Field(
        "seen",
        description="once a network's port changes settle, fetch all its instance ports in "
        "one call and cache them, so guests that boot after their instances were created "
        "find their lookup cached: `seen` for networks this agent has answered for, `all` "
        "for every network the change feed names (one node or a small site; the demo uses "
        "it), `off`",
    )
    feed_wait: int = Field(
        10,
        ge=1,
        le=60,
        description="change-feed long-poll seconds; the cache is bypassed once the feed is "
        "silent for longer than this (plus a grace)",
    )
    access_log: bool = Field(
        True,
        description="one line per guest request (`instance_id`, `project_id`, `network_id`, "
        "`router_id`, `remote_addr`, `method`, `path`, `status`, `duration_ms`) on logger "
        "`metastack.access`",
    )
    metrics_listen: MetricsListen = ""
    log_level: LogLevelKey = "info"
    log_format: LogFormatKey = "text"
    event_loop: EventLoopKey = "auto"
    shutdown_timeout: ShutdownTimeout = 5.0

    _admin_token_file = model_validator(mode="before")(admin_token_from_file)

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
        return single_line(value)

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


def deduce_socket_mode(user: str, group: str) -> Literal["user", "group", "all"]:
    """neutron's `deduce` (UnixDomainMetadataProxy._get_socket_mode), rule for rule.

    `user` when the proxies' user is empty, `0`, `root` or the agent's effective user (by
    id or name); else `group` when their group is empty or the agent's effective group (by
    id or name); else `all`.
    """
    if not user or user in ("0", "root") or _is_effective_user(user):
        return "user"
    if not group or _is_effective_group(group):
        return "group"
    return "all"


def _is_effective_user(user: str) -> bool:
    euid = os.geteuid()
    if user == str(euid):
        return True
    try:
        return user == pwd.getpwuid(euid).pw_name
    except KeyError:  # an effective id without a passwd entry has no name to match
        return False


def _is_effective_group(group: str) -> bool:
    egid = os.getegid()
    if group == str(egid):
        return True
    try:
        return group == grp.getgrgid(egid).gr_name
    except KeyError:
        return False


def load_agent_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """File section `[agent]`, then `METASTACK_AGENT_*`, then flag overrides."""
    return load_section(AgentConfig, "agent", path, environ, overrides)
