"""What the store returns to the control API: one pydantic view per object, field names pinned."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from metastack.store.specs import BlockDeviceSpec, DeviceTagSpec, HostRouteSpec


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


Timestamp = Annotated[datetime, AfterValidator(_aware)]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProjectView(View):
    id: str
    name: str
    description: str
    created_at: Timestamp


class NetworkView(View):
    id: str
    name: str
    project_id: str
    mtu: int
    subnets: list[str]
    dhcp_agents: list[str]  # ids of the agents serving it, by slot
    created_at: Timestamp


class SubnetView(View):
    id: str
    network_id: str
    name: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    dns_nameservers: list[str]
    host_routes: list[HostRouteSpec]
    enable_dhcp: bool
    ipv6_address_mode: Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"] | None
    created_at: Timestamp


class FixedIpView(View):
    subnet_id: str
    ip_address: str


class PortView(View):
    id: str
    network_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[FixedIpView]
    device_id: str
    device_owner: str
    floating_ip: str | None
    vif_type: str
    device_name: str | None
    created_at: Timestamp


class RouterInterfaceView(View):
    subnet_id: str
    network_id: str
    port_id: str
    ip_address: str


class RouterView(View):
    id: str
    name: str
    project_id: str
    interfaces: list[RouterInterfaceView]
    ha: bool
    vrid: int | None  # VRRP id of an HA router, unique within its project
    l3_agents: list[str]  # ids of the agents serving it, by slot
    created_at: Timestamp


class AgentView(View):
    id: str
    host: str
    capabilities: list[Literal["dhcp", "l3", "metadata"]]
    alive: bool
    heartbeat_at: Timestamp
    created_at: Timestamp
    networks: list[str]  # scheduled to it (DHCP)
    routers: list[str]  # scheduled to it (L3)


class InstanceView(View):
    uuid: str
    ec2_id: str  # i-%08x
    name: str
    hostname: str
    project_id: str
    user_id: str
    availability_zone: str | None
    launch_index: int
    reservation_id: str
    image_ref: str | None
    kernel_id: str | None
    ramdisk_id: str | None
    flavor_name: str
    root_device_name: str | None
    default_ephemeral_device: str | None
    default_swap_device: str | None
    block_device_mapping: list[BlockDeviceSpec]
    key_name: str | None
    key_type: Literal["ssh", "x509"]
    public_key: str | None
    user_data: str | None  # base64, as given
    metadata: dict[str, str]
    security_groups: list[str]
    device_tags: list[DeviceTagSpec]
    dedicated_cpus: list[int]
    boot_roles: str
    password_set: bool
    ports: list[str]
    revision: int
    created_at: Timestamp
    updated_at: Timestamp


class InstanceMetadataView(View):
    metadata: dict[str, str]


class PasswordView(View):
    password: str


class ChangeView(View):
    revision: int
    resource: Literal["project", "network", "subnet", "router", "port", "instance"]
    resource_id: str
    action: Literal["create", "update", "delete"]
    project_id: str
    network_id: str
    instance_id: str


class ChangesView(View):
    revision: int
    changes: list[ChangeView]
