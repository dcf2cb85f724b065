"""What a caller may write: strict pydantic specs to create (whole) and update (partial) objects."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metastack.store.fields import (
    Cidr,
    DeviceName,
    IpAddress,
    MacAddress,
    Name,
    ProjectId,
    RequiredName,
    Short,
    Unset,
    UserData,
    Uuid,
    VifType,
)
from metastack.store.scheduling import CAPABILITIES, Capability

Ipv6Mode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]


def _nul_at(value: Any, where: str = "") -> str | None:
    """The dotted path of the first string (value or key) holding a NUL character, if any."""
    if isinstance(value, str):
        return (where or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where or "body"
            found = _nul_at(item, path)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{where}.{index}" if where else str(index))
            if found:
                return found
    return None


class Spec(BaseModel):
    """Strict (no coercion), closed (unknown fields refused), immutable; no NUL characters
    anywhere (PostgreSQL cannot store them, and SQLite should not hold what it cannot)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = _nul_at(data)
        if where is not None:
            raise ValueError(f"{where.replace(chr(0), '?')}: must not contain NUL characters")
        return data


def _no_defaults(schema: dict[str, Any]) -> None:
    """A Patch field left out keeps its value: it has no default. (Its Python default, None,
    stands for "left out"; as `default: null` in the schema it would contradict the type of
    the fields that refuse null, and tell clients to send null to the others.)"""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class Patch(Spec):
    """A partial update: fields left out are kept; null only where `nullable` allows it."""

    model_config = ConfigDict(json_schema_extra=_no_defaults)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null(self) -> Self:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.nullable:
                raise ValueError(f"{name}: may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the caller gave, as plain Python values."""
        return self.model_dump(exclude_unset=True)


class ProjectCreate(Spec):
    id: ProjectId | None = None
    name: RequiredName
    description: str = Field("", max_length=1024)


class ProjectUpdate(Patch):
    name: RequiredName | Unset = None
    description: Annotated[str, Field(max_length=1024)] | Unset = None


class NetworkCreate(Spec):
    id: Uuid | None = None
    name: Name = ""
    project_id: ProjectId
    mtu: int = Field(1500, ge=68, le=65535)


class NetworkUpdate(Patch):
    name: Name | Unset = None
    mtu: Annotated[int, Field(ge=68, le=65535)] | Unset = None


class HostRouteSpec(Spec):
    destination: Cidr
    nexthop: IpAddress


def _same_version(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address).version == ipaddress.ip_network(cidr).version


class SubnetCreate(Spec):
    id: Uuid | None = None
    network_id: Uuid
    name: Name = ""
    cidr: Cidr
    ip_version: Literal[4, 6] | None = None
    gateway_ip: IpAddress | None = None  # left out: the first address; null: no gateway
    dns_nameservers: list[IpAddress] = Field(default_factory=list, max_length=16)
    host_routes: list[HostRouteSpec] = Field(default_factory=list, max_length=64)
    enable_dhcp: bool = True
    ipv6_address_mode: Ipv6Mode | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        network = ipaddress.ip_network(self.cidr)
        if self.ip_version is not None and self.ip_version != network.version:
            raise ValueError(f"ip_version: {self.ip_version} does not match cidr {self.cidr}")
        if self.ipv6_address_mode is not None and network.version != 6:
            raise ValueError("ipv6_address_mode: only for IPv6 subnets")
        for route in self.host_routes:
            if not _same_version(route.nexthop, route.destination):
                raise ValueError(f"host_routes: nexthop {route.nexthop} is not the same IP version")
        return self

    def effective_gateway(self) -> str | None:
        """The gateway to store: the given one, none if null was given, else the first host."""
        if "gateway_ip" in self.model_fields_set:
            return self.gateway_ip
        network = ipaddress.ip_network(self.cidr)
        if network.num_addresses < 4:
            return None
        return next(network.hosts()).compressed if network.version == 4 else str(network[1])


class SubnetUpdate(Patch):
    nullable = frozenset({"gateway_ip"})
    name: Name | Unset = None
    gateway_ip: IpAddress | None = None
    dns_nameservers: Annotated[list[IpAddress], Field(max_length=16)] | Unset = None
    host_routes: Annotated[list[HostRouteSpec], Field(max_length=64)] | Unset = None
    enable_dhcp: bool | Unset = None


class RouterCreate(Spec):
    id: Uuid | None = None
    name: Name = ""
    project_id: ProjectId


class RouterUpdate(Patch):
    name: Name | Unset = None


class AgentReport(Spec):
    """A network node's state report: registers it the first time, then keeps it alive."""

    host: RequiredName
    capabilities: Annotated[list[Capability], Field(max_length=3)] = Field(
        default_factory=lambda: list(CAPABILITIES)
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.capabilities)) != len(self.capabilities):
            raise ValueError("capabilities: each at most once")
        return self


class InterfaceAdd(Spec):
    subnet_id: Uuid
    ip_address: IpAddress | None = None  # default: the subnet's gateway IP


class FixedIpSpec(Spec):
    subnet_id: Uuid | None = None
    ip_address: IpAddress | None = None

    @model_validator(mode="after")
    def _one_given(self) -> Self:
        if self.subnet_id is None and self.ip_address is None:
            raise ValueError("fixed_ips: each needs a subnet_id, an ip_address or both")
        return self


class PortCreate(Spec):
    id: Uuid | None = None
    network_id: Uuid
    project_id: ProjectId | None = None  # default: the network's project
    mac_address: MacAddress | None = None  # default: generated fa:16:3e:xx:xx:xx
    fixed_ips: list[FixedIpSpec] | None = Field(None, max_length=32)  # default: allocated
    device_id: Short = ""
    device_owner: Short = ""
    floating_ip: IpAddress | None = None
    vif_type: VifType = "bridge"
    device_name: DeviceName | None = None


class PortUpdate(Patch):
    nullable = frozenset({"floating_ip", "device_name"})
    mac_address: MacAddress | Unset = None
    fixed_ips: Annotated[list[FixedIpSpec], Field(max_length=32)] | Unset = None
    device_id: Short | Unset = None
    device_owner: Short | Unset = None
    floating_ip: IpAddress | None = None
    vif_type: VifType | Unset = None
    device_name: DeviceName | None = None


class BlockDeviceSpec(Spec):
    device_name: Short | None = None
    source_type: Literal["image", "volume", "snapshot", "blank"] = "blank"
    destination_type: Literal["local", "volume"] = "local"
    guest_format: Short | None = None
    boot_index: int | None = Field(None, ge=-1)
    volume_id: Short | None = None
    no_device: bool = False


class DeviceTagSpec(Spec):
    type: Literal["nic", "disk", "share"]
    bus: Literal["pci", "usb", "scsi", "ide", "xen"] | None = None
    address: Short | None = None
    tags: list[Short] = Field(default_factory=list, max_length=64)
    mac: MacAddress | None = None
    vlan: int | None = Field(None, ge=0, le=4095)
    vf_trusted: bool = False
    serial: Short | None = None
    path: Short | None = None
    share_id: Short | None = None
    tag: Short | None = None


class NetworkAttach(Spec):
    """One NIC of a new instance: a new port on `network_id` (optionally at `ip_address`),
    or an existing unbound port `port_id`."""

    network_id: Uuid | None = None
    ip_address: IpAddress | None = None
    port_id: Uuid | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.network_id is None) == (self.port_id is None):
            raise ValueError("networks: give either network_id or port_id")
        if self.ip_address is not None and self.port_id is not None:
            raise ValueError("networks: ip_address goes with network_id, not port_id")
        return self


Metadata = dict[str, str]
MAX_METADATA_ITEMS = 128  # nova's default metadata_items quota
KeyType = Literal["ssh", "x509"]
HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$"
Cpu = Annotated[int, Field(ge=0, le=65535)]


class InstanceCreate(Spec):
    uuid: Uuid | None = None
    name: RequiredName
    hostname: str | None = Field(None, pattern=HOSTNAME)  # default: derived from name, as nova does
    project_id: ProjectId
    user_id: Short = ""
    availability_zone: Short | None = None
    launch_index: int = Field(0, ge=0)
    reservation_id: Short | None = None  # default: generated r-xxxxxxxx
    image_ref: Short | None = None
    kernel_id: Short | None = None
    ramdisk_id: Short | None = None
    flavor_name: Short = ""
    root_device_name: Short | None = "/dev/vda"
    default_ephemeral_device: Short | None = None
    default_swap_device: Short | None = None
    block_device_mapping: list[BlockDeviceSpec] = Field(default_factory=list, max_length=64)
    key_name: Short | None = None
    key_type: KeyType = "ssh"
    public_key: str | None = Field(None, max_length=16384)
    user_data: UserData | None = None
    metadata: Metadata = Field(default_factory=dict, max_length=MAX_METADATA_ITEMS)
    security_groups: list[RequiredName] = Field(default_factory=lambda: ["default"], max_length=64)
    device_tags: list[DeviceTagSpec] = Field(default_factory=list, max_length=64)
    dedicated_cpus: list[Cpu] = Field(default_factory=list, max_length=1024)
    boot_roles: str = Field("", max_length=1024)  # comma-separated, for dynamic vendor data
    networks: list[NetworkAttach] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _metadata_sizes(self) -> Self:
        check_metadata(self.metadata)
        return self


class InstanceUpdate(Patch):
    nullable = frozenset(
        {
            "availability_zone",
            "image_ref",
            "kernel_id",
            "ramdisk_id",
            "root_device_name",
            "default_ephemeral_device",
            "default_swap_device",
            "key_name",
            "public_key",
            "user_data",
        }
    )
    name: RequiredName | Unset = None
    hostname: Annotated[str, Field(pattern=HOSTNAME)] | Unset = None
    user_id: Short | Unset = None
    availability_zone: Short | None = None
    launch_index: Annotated[int, Field(ge=0)] | Unset = None
    reservation_id: Short | Unset = None
    image_ref: Short | None = None
    kernel_id: Short | None = None
    ramdisk_id: Short | None = None
    flavor_name: Short | Unset = None
    root_device_name: Short | None = None
    default_ephemeral_device: Short | None = None
    default_swap_device: Short | None = None
    block_device_mapping: Annotated[list[BlockDeviceSpec], Field(max_length=64)] | Unset = None
    key_name: Short | None = None
    key_type: KeyType | Unset = None
    public_key: str | None = Field(None, max_length=16384)
    user_data: UserData | None = None
    metadata: Annotated[Metadata, Field(max_length=MAX_METADATA_ITEMS)] | Unset = None
    security_groups: Annotated[list[RequiredName], Field(max_length=64)] | Unset = None
    device_tags: Annotated[list[DeviceTagSpec], Field(max_length=64)] | Unset = None
    dedicated_cpus: Annotated[list[Cpu], Field(max_length=1024)] | Unset = None
    boot_roles: Annotated[str, Field(max_length=1024)] | Unset = None

    @model_validator(mode="after")
    def _metadata_sizes(self) -> Self:
        check_metadata(self.metadata or {})
        return self


class InstanceMetadataSet(Spec):
    """Metadata items to add or change; the instance's other items are kept."""

    metadata: Annotated[Metadata, Field(max_length=MAX_METADATA_ITEMS)]

    @model_validator(mode="after")
    def _metadata_sizes(self) -> Self:
        check_metadata(self.metadata)
        return self


def check_metadata_key(key: str) -> None:
    """Nova's rule for a metadata key: 1-255 characters."""
    if not 1 <= len(key) <= 255:
        raise ValueError(f"metadata: key {key[:40]!r} must be 1-255 characters")


def check_metadata_keys(keys: Sequence[str]) -> None:
    """Keys of metadata items to remove: at least one, each by the key rule, no NUL."""
    if not keys:
        raise ValueError("key: give at least one metadata key")
    if len(keys) > MAX_METADATA_ITEMS:
        raise ValueError(f"key: at most {MAX_METADATA_ITEMS} keys")
    for key in keys:
        if "\x00" in key:
            raise ValueError("key: must not contain NUL characters")
        check_metadata_key(key)


def check_metadata(items: Metadata) -> None:
    """Nova's limits on metadata items: keys 1-255 characters, values up to 255."""
    for key, value in items.items():
        check_metadata_key(key)
        if len(value) > 255:
            raise ValueError(f"metadata: value of {key[:40]!r} is longer than 255 characters")
