"""`[netagent]` settings: option names follow neutron's dhcp_agent.ini / l3_agent.ini."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from metastack.config import DEFAULT_STATE_PATH, _Section, http_urls, load_section, url_list

_SAMPLE_ID = "0123456789abcdef0123456789abcdef"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS = re.compile(r"^[A-Za-z0-9_.-]{0,200}$")


class NetagentConfig(_Section):
    """`metastack netagent`: the DHCP and router namespaces of one network node."""

    # One control API base URL, or several (failed over when one stops answering).
    control_url: str | list[str] = "http://127.0.0.1:8774"
    admin_token: str | None = None
    # Name of this node: part of the DHCP port's device_id (`dhcp-<host>`).
    host: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    enable_isolated_metadata: bool = True
    force_metadata: bool = False
    # The router namespaces' proxy port and the mark of redirected traffic (l3 agent).
    enable_metadata_proxy: bool = True
    metadata_port: int = Field(9697, ge=1, le=65535)
    metadata_access_mark: str = "0x1"
    dnsmasq_binary: str = "dnsmasq"
    # dnsmasq drops to this user after start; it must read the files under state_path.
    dnsmasq_user: str | None = None
    dhcp_lease_duration: int = Field(86400, ge=120)
    dnsmasq_lease_max: int = Field(2**24, ge=1)
    state_path: str = DEFAULT_STATE_PATH
    # Which networks and routers this host serves (ids); empty = all of them.
    networks: list[str] = Field(default_factory=list)
    routers: list[str] = Field(default_factory=list)
    # Linux bridge of a network; VM taps (libvirt, Firecracker) are plugged into it.
    bridge_name_template: str = "ms-br-{network_id:.8}"
    # Namespace holding the bridges ("" = the host's own namespace, for real VM taps).
    fabric_netns: str = "metastack-fabric"
    proxy_control_socket: str = f"{DEFAULT_STATE_PATH}/proxy_control"
    # When set, the netagent runs `metastack proxy --config <this>` itself and restarts it
    # within respawn_interval if it dies (else systemd or another supervisor does).
    proxy_config: str | None = None
    # Prefix of `qdhcp-<id>` / `qrouter-<id>`; tests and the demo use `ms-<run>-`.
    namespace_prefix: str = ""
    # Seconds between full resyncs (everything observed and repaired).
    resync_interval: float = Field(30.0, gt=0)
    # Seconds between liveness checks of dnsmasq and of the proxy's listeners.
    respawn_interval: float = Field(0.5, gt=0)
    # Long-poll wait of the change feed.
    feed_wait: int = Field(20, ge=1, le=60)

    @field_validator("control_url")
    @classmethod
    def _url(cls, url: str | list[str]) -> str | list[str]:
        return http_urls(url)

    @field_validator("bridge_name_template")
    @classmethod
    def _bridge_template(cls, template: str) -> str:
        try:
            sample = template.format(network_id=_SAMPLE_ID)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{template!r}: only {{network_id}} may be used ({exc})") from None
        if not _IFNAME.match(sample):
            raise ValueError(f"{template!r} gives {sample!r}, not an interface name (<= 15)")
        return template

    @field_validator("fabric_netns", "namespace_prefix")
    @classmethod
    def _netns_text(cls, value: str) -> str:
        if not _NETNS.match(value):
            raise ValueError(f"{value!r}: letters, digits, '_', '.', '-' only")
        return value

    @field_validator("metadata_access_mark")
    @classmethod
    def _mark(cls, value: str) -> str:
        int(value, 0)
        return value

    @field_validator("state_path", "proxy_control_socket")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    def control_urls(self) -> list[str]:
        """Control API base URLs (one or several)."""
        return url_list(self.control_url)

    def bridge_name(self, network_id: str) -> str:
        """The bridge of a network."""
        return self.bridge_name_template.format(network_id=network_id)

    def dhcp_netns(self, network_id: str) -> str:
        """The DHCP namespace of a network."""
        return f"{self.namespace_prefix}qdhcp-{network_id}"

    def router_netns(self, router_id: str) -> str:
        """The namespace of a router."""
        return f"{self.namespace_prefix}qrouter-{router_id}"

    @property
    def dhcp_device_id(self) -> str:
        """device_id of the DHCP ports this host owns."""
        return f"dhcp-{self.host}"


def load_netagent_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NetagentConfig:
    """File section `[netagent]`, then `METASTACK_NETAGENT_*`, then flag overrides."""
    return load_section(NetagentConfig, "netagent", path, environ, overrides)
