"""Frozen snapshots of what the metadata formats need, built by the store, read by renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Ipv6AddressMode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]
DeviceBus = Literal["pci", "usb", "scsi", "ide", "xen"]


@dataclass(frozen=True, slots=True)
class HostRoute:
    destination: str  # CIDR, e.g. "10.1.0.0/16"
    nexthop: str


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    ip_version: int  # 4 or 6
    gateway_ip: str | None
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[HostRoute, ...] = ()
    enable_dhcp: bool = True
    ipv6_address_mode: Ipv6AddressMode | None = None


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    project_id: str
    mtu: int = 1500


@dataclass(frozen=True, slots=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    network_id: str
    project_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    device_id: str = ""
    device_owner: str = ""
    floating_ip: str | None = None
    vif_type: str = "bridge"
    device_name: str | None = None


@dataclass(frozen=True, slots=True)
class Vif:
    """One port of an instance with the network and subnets it needs for rendering."""

    port: Port
    network: Network
    subnets: tuple[Subnet, ...]  # the subnets of port.fixed_ips, in fixed_ips order
    network_has_dhcp_port: bool = False  # any port with device_owner "network:dhcp" on it


@dataclass(frozen=True, slots=True)
class BlockDevice:
    device_name: str | None  # e.g. "/dev/vdb"
    source_type: Literal["image", "volume", "snapshot", "blank"] = "blank"
    destination_type: Literal["local", "volume"] = "local"
    guest_format: str | None = None  # "swap" for a swap disk
    boot_index: int | None = None
    volume_id: str | None = None
    no_device: bool = False


@dataclass(frozen=True, slots=True)
class DeviceTag:
    """A tagged device of the instance, rendered into meta_data.json `devices`."""

    type: Literal["nic", "disk", "share"]
    bus: DeviceBus | None = None
    address: str | None = None
    tags: tuple[str, ...] = ()
    mac: str | None = None  # nic
    vlan: int | None = None  # nic
    vf_trusted: bool = False  # nic
    serial: str | None = None  # disk
    path: str | None = None  # disk
    share_id: str | None = None  # share
    tag: str | None = None  # share


@dataclass(frozen=True, slots=True)
class Instance:
    """Everything the EC2 and OpenStack trees are rendered from, for one instance."""

    uuid: str
    ec2_id: int  # rendered i-%08x
    name: str
    hostname: str
    project_id: str
    user_id: str = ""
    availability_zone: str | None = None
    launch_index: int = 0
    reservation_id: str = ""
    image_ref: str | None = None
    image_ec2_id: int | None = None  # rendered ami-%08x; None for boot from volume
    kernel_id: str | None = None
    kernel_ec2_id: int | None = None  # rendered aki-%08x
    ramdisk_id: str | None = None
    ramdisk_ec2_id: int | None = None  # rendered ari-%08x
    flavor_name: str = ""
    root_device_name: str | None = None
    default_ephemeral_device: str | None = None
    default_swap_device: str | None = None
    block_device_mapping: tuple[BlockDevice, ...] = ()
    key_name: str | None = None
    key_type: Literal["ssh", "x509"] = "ssh"
    public_key: str | None = None
    user_data: bytes | None = None  # decoded (raw) user data
    metadata: tuple[tuple[str, str], ...] = ()  # user metadata items, in insertion order
    security_groups: tuple[str, ...] = ()
    device_tags: tuple[DeviceTag, ...] = ()
    dedicated_cpus: tuple[int, ...] = ()
    password: str = ""  # set by the guest through the password endpoint
    vifs: tuple[Vif, ...] = field(default=())
    revision: int = 0  # store revision of the last change that touched this instance
    boot_roles: str = ""  # comma-separated role names of the booting user (dynamic vendordata)
