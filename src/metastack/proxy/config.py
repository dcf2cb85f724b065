"""Settings of `metastack proxy` (`[proxy]`, `METASTACK_PROXY_*`) and listener specs."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from metastack.config import DEFAULT_STATE_PATH, _Section, load_section, parse_hostport

# Ids end up verbatim in a header line: letters, digits and a few separators only.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
_NETNS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class ListenerConfig(_Section):
    """One listening socket: where (namespace, address) and whose (network or router)."""

    netns: str | None = None
    host: str = "169.254.169.254"
    port: int = Field(80, ge=1, le=65535)
    network_id: str | None = None
    router_id: str | None = None
    # Device whose index scopes an IPv6 link-local host (the DHCP port for fe80::a9fe:a9fe).
    interface: str | None = None

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

    metadata_proxy_socket: str = f"{DEFAULT_STATE_PATH}/metadata_proxy"
    # Control API (JSON over HTTP on a unix socket); "" disables it.
    control_socket: str = f"{DEFAULT_STATE_PATH}/proxy_control"
    control_socket_mode: int = Field(0o600, ge=0, le=0o777)
    listeners: list[ListenerConfig] = Field(default_factory=list)
    backlog: int = Field(4096, ge=1)
    max_header_bytes: int = Field(16384, ge=1024)
    max_headers: int = Field(100, ge=8)
    max_body_bytes: int = Field(1 << 20, ge=0)
    # Guest side: the whole request head (and body) must arrive within header_timeout;
    # an idle keep-alive connection is closed after keepalive_timeout.
    header_timeout: float = Field(10.0, gt=0)
    keepalive_timeout: float = Field(30.0, gt=0)
    # Agent side: connect failure -> 503 within connect_timeout; no answer -> 504.
    connect_timeout: float = Field(2.0, gt=0)
    upstream_timeout: float = Field(30.0, gt=0)
    # Removed: `wait_for_change=true` in a query string no longer buys a longer timeout.
    # Still accepted, so that an old config starts; ignored, with a warning at start.
    long_poll_timeout: float | None = Field(None, gt=0)
    upstream_pool_size: int = Field(256, ge=0)
    # Requests forwarded to the agent at once; the rest, whatever they ask, wait in
    # arrival order. 0: no limit.
    upstream_concurrency: int = Field(32, ge=0)
    shutdown_timeout: float = Field(5.0, ge=0)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
