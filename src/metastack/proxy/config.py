"""Settings of `metastack proxy` (`[proxy]`, `METASTACK_PROXY_*`) and listener specs."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from metastack.config import (
    DEFAULT_STATE_PATH,
    EventLoopKey,
    LogFormatKey,
    LogLevelKey,
    MetricsListen,
    ShutdownTimeout,
    _Section,
    load_section,
    parse_hostport,
)

# Ids end up verbatim in a header line: letters, digits and a few separators only.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
_NETNS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class ListenerConfig(_Section):
    """One listening socket: where (namespace, address) and whose (network or router)."""

    netns: str | None = Field(
        None, description="network namespace to listen in (none: the proxy's own)"
    )
    host: str = Field("169.254.169.254", description="address to listen on")
    port: int = Field(80, ge=1, le=65535, description="port to listen on")
    network_id: str | None = Field(
        None, description="stamped as `X-Neutron-Network-ID` (one of network_id, router_id)"
    )
    router_id: str | None = Field(
        None, description="stamped as `X-Neutron-Router-ID` (one of network_id, router_id)"
    )
    interface: str | None = Field(
        None,
        description="device whose index scopes an IPv6 link-local `host` (the DHCP port for "
        "`fe80::a9fe:a9fe`)",
    )

    @field_validator("netns")
    @classmethod
    def _netns_name(cls, value: str | None) -> str | None:
        if value is not None and not _NETNS.match(value):
            raise ValueError(f"invalid namespace name {value!r}")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_ip(cls, value: str) -> str:
        return str(ipaddress.ip_address(value.strip("[]")))

    @field_validator("network_id", "router_id")
    @classmethod
    def _id_chars(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError(f"invalid id {value!r}")
        return value

    @field_validator("interface")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and not _IFNAME.match(value):
            raise ValueError(f"invalid interface name {value!r}")
        return value

    @model_validator(mode="after")
    def _one_identity(self) -> ListenerConfig:
        if (self.network_id is None) == (self.router_id is None):
            raise ValueError("exactly one of network_id, router_id")
        return self

    @property
    def key(self) -> tuple[str, str, int]:
        """What a listener is held under: one socket per (namespace, address, port)."""
        return (self.netns or "", self.host, self.port)


def parse_listener(text: str) -> ListenerConfig:
    """Parse `netns=NS,bind=HOST:PORT,network=ID|router=ID[,interface=DEV]`."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq:
            raise ValueError(f"expected key=value in {text!r}")
        if name == "bind":
            values["host"], values["port"] = parse_hostport(value)
        elif name in ("network", "router"):
            values[f"{name}_id"] = value
        elif name in ("netns", "host", "port", "interface", "network_id", "router_id"):
            values[name] = value
        else:
            raise ValueError(f"unknown listener key {name!r} in {text!r}")
    return ListenerConfig.model_validate(values)


class ProxyConfig(_Section):
    """`metastack proxy`: listeners inside namespaces, forwarding to the agent's unix socket."""

    metadata_proxy_socket: str = Field(
        f"{DEFAULT_STATE_PATH}/metadata_proxy", description="the agent's unix socket"
    )
    control_socket: str = Field(
        f"{DEFAULT_STATE_PATH}/proxy_control",
        description="unix socket of the control API: listeners added/removed at runtime "
        '(`GET/POST/PUT/DELETE /listeners`); `""` disables it',
    )
    control_socket_mode: int = Field(
        0o600,
        ge=0,
        le=0o777,
        description="permissions of `control_socket`",
        json_schema_extra={"octal": True},
    )
    listeners: list[ListenerConfig] = Field(
        default_factory=list,
        description="static listeners held from the start (none by default), one "
        "`[[proxy.listeners]]` table each; the control socket adds and removes others",
    )
    backlog: int = Field(4096, ge=1, description="listen backlog of each listener")
    max_header_bytes: int = Field(16384, ge=1024, description="request head limit (larger: 431)")
    max_headers: int = Field(100, ge=8, description="header count limit (more: 431)")
    max_body_bytes: int = Field(1 << 20, ge=0, description="request body limit (larger: 413)")
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds for a guest's whole request head (and body) to arrive",
    )
    keepalive_timeout: float = Field(
        30.0, gt=0, description="an idle keep-alive guest connection is closed after this"
    )
    connect_timeout: float = Field(
        2.0,
        gt=0,
        description="seconds to connect to the agent, else 503; an agent socket whose listen "
        "backlog is full is tried again until then (one nobody listens on fails at once)",
    )
    upstream_timeout: float = Field(
        30.0, gt=0, description="seconds for the agent's answer, else 504"
    )
    long_poll_timeout: float | None = Field(
        None,
        gt=0,
        description="no longer used: `wait_for_change=true` buys no longer timeout; "
        "still accepted so that an old config starts, ignored with a warning",
    )
    upstream_pool_size: int = Field(256, ge=0, description="keep-alive connections to the agent")
    upstream_concurrency: int = Field(
        32,
        ge=0,
        description="requests in flight to the agent at once; the rest wait in arrival "
        "order, within their timeout, whatever they ask (`wait_for_change=true` included); "
        "a request still unanswered after 0.5 s gives its turn up; 0 = no limit",
    )
    metrics_listen: MetricsListen = ""
    log_level: LogLevelKey = "info"
    log_format: LogFormatKey = "text"
    event_loop: EventLoopKey = "auto"
    shutdown_timeout: ShutdownTimeout = 5.0

    @field_validator("metadata_proxy_socket")
    @classmethod
    def _socket_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


def load_proxy_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProxyConfig:
    """Load `[proxy]` from file, `METASTACK_PROXY_*` and flag overrides."""
    return load_section(ProxyConfig, "proxy", path, environ, overrides)
