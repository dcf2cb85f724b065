"""`[netagent]` settings: option names follow neutron's dhcp_agent.ini / l3_agent.ini."""

from __future__ import annotations

import os
import re
import socket
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

_SAMPLE_ID = "0123456789abcdef0123456789abcdef"
# What a node offers the control API's scheduler (the agent record's `capabilities`).
Capability = Literal["dhcp", "l3", "metadata"]
CAPABILITIES: tuple[Capability, ...] = ("dhcp", "l3", "metadata")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS = re.compile(r"^[A-Za-z0-9_.-]{0,200}$")


class NetagentConfig(_Section):
    """`metastack netagent`: the DHCP and router namespaces of one network node."""

    control_url: str | list[str] = Field(
        "http://127.0.0.1:8774",
        description="control API: one base URL or a list (failed over when one stops answering)",
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
    host: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=200,
        description="this node's agent (one record per host); its DHCP ports' `device_id` "
        "is `dhcp-<host>`",
        json_schema_extra={"default_text": "the hostname", "example": "network-1"},
    )
    capabilities: list[Capability] = Field(
        default_factory=lambda: list(CAPABILITIES),
        description="what the node offers the scheduler: `dhcp` (networks), `l3` (routers), "
        "`metadata`",
    )
    report_interval: float = Field(
        30.0,
        gt=0,
        description="seconds between state reports to the control API (keep it well under "
        "the API's `agent_down_time`)",
    )
    enable_isolated_metadata: bool = Field(
        True,
        description="neutron's rule: a 169.254.169.254 route (DHCP options 121/249) to the "
        "DHCP port on networks without a router",
    )
    force_metadata: bool = Field(
        False, description="neutron's rule: that route on every network, routed or not"
    )
    enable_metadata_proxy: bool = Field(
        True, description="router namespaces redirect 169.254.169.254:80 to `metadata_port`"
    )
    metadata_port: int = Field(
        9697, ge=1, le=65535, description="the proxy's port in router namespaces"
    )
    metadata_access_mark: str = Field(
        "0x1", description="mark of redirected traffic (its mark-and-drop rules)"
    )
    dnsmasq_binary: str = Field("dnsmasq", description="dnsmasq executable")
    dnsmasq_user: str | None = Field(
        None,
        description="user dnsmasq drops to after start (none: dnsmasq's own, `nobody`); it "
        "must read the files under `state_path`",
    )
    dhcp_lease_duration: int = Field(86400, ge=120, description="DHCP lease seconds")
    dnsmasq_lease_max: int = Field(2**24, ge=1, description="dnsmasq `--dhcp-lease-max`")
    state_path: str = Field(
        DEFAULT_STATE_PATH,
        description="dnsmasq files under `dhcp/<network>/`; every folder on the way must be "
        "searchable by other users (dnsmasq drops to `nobody`, or `dnsmasq_user`), else the "
        "netagent refuses to start and names the folder",
    )
    networks: list[str] = Field(
        default_factory=list,
        description="serve these networks (ids) instead of the ones scheduled to the node; "
        "empty = the scheduled ones",
    )
    routers: list[str] = Field(
        default_factory=list,
        description="serve these routers (ids) instead of the ones scheduled to the node; "
        "empty = the scheduled ones",
    )
    bridge_name_template: str = Field(
        "ms-br-{network_id:.8}",
        description="Linux bridge of a network; VM taps (libvirt, Firecracker) are plugged into it",
    )
    fabric_netns: str = Field(
        "metastack-fabric",
        description='namespace holding the bridges (`""` = the host namespace, for real VM taps)',
    )
    proxy_control_socket: str = Field(
        f"{DEFAULT_STATE_PATH}/proxy_control", description="the proxy to configure"
    )
    proxy_config: str | None = Field(
        None,
        description="when set, the netagent runs `metastack proxy --config <this>` itself "
        "and restarts it within `respawn_interval` if it dies (else systemd or another "
        "supervisor does)",
    )
    namespace_prefix: str = Field(
        "", description="prefix of `qdhcp-`/`qrouter-` names (tests and the demo: `ms-<run>-`)"
    )
    resync_interval: float = Field(
        30.0,
        gt=0,
        description="seconds between full resyncs (re-reads every namespace; the control API "
        "only if the change feed showed a network, subnet, port or router change since the "
        "last read, or is down)",
    )
    respawn_interval: float = Field(
        0.5,
        gt=0,
        description="seconds between liveness checks (dnsmasq, proxy, listeners)",
    )
    feed_wait: int = Field(20, ge=1, le=60, description="change-feed long-poll seconds")
    metrics_listen: MetricsListen = ""
    log_level: LogLevelKey = "info"
    log_format: LogFormatKey = "text"
    event_loop: EventLoopKey = "auto"
    shutdown_timeout: ShutdownTimeout = 5.0

    _admin_token_file = model_validator(mode="before")(admin_token_from_file)

    @field_validator("admin_token")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        return single_line(value)

    @field_validator("capabilities")
    @classmethod
    def _distinct(cls, capabilities: list[Capability]) -> list[Capability]:
        if len(set(capabilities)) != len(capabilities):
            raise ValueError("each capability at most once")
        return capabilities

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
    def reported_capabilities(self) -> list[Capability]:
        """The capabilities this host reports: a static list of networks (routers) takes it
        out of DHCP (L3) scheduling, since it would not serve what is scheduled to it."""
        static = {"dhcp": bool(self.networks), "l3": bool(self.routers), "metadata": False}
        return [capability for capability in self.capabilities if not static[capability]]

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
