"""The EC2-compatible tree (`/<version>/meta-data/...`, `/<version>/user-data`)."""

from __future__ import annotations

from typing import Final

from metastack.metadata.model import BlockDevice, Instance
from metastack.metadata.tree import REQUEST_ADDRESS, Node
from metastack.metadata.versions import ec2_since

# What nova serves when the instance has no root device name.
_DEFAULT_BLOCK_DEVICE_MAPPING: Final[dict[str, Node]] = {
    "ami": "sda1",
    "ephemeral0": "sda2",
    "root": "/dev/sda1",
    "swap": "sda3",
}


def hostname(instance: Instance, dhcp_domain: str) -> str:
    """The instance hostname qualified with the DHCP domain, bare when the domain is empty."""
    if dhcp_domain:
        return f"{instance.hostname}.{dhcp_domain}"
    return instance.hostname


def first_fixed_ipv4(instance: Instance) -> str | None:
    """The first IPv4 fixed address across the VIFs, in VIF then subnet order."""
    for vif in instance.vifs:
        for subnet in vif.subnets:
            if subnet.ip_version != 4:
                continue
            for fixed_ip in vif.port.fixed_ips:
                if fixed_ip.subnet_id == subnet.id:
                    return fixed_ip.ip_address
    return None


def first_floating_ip(instance: Instance) -> str:
    """The first floating IP across the VIFs, or "" when there is none."""
    for vif in instance.vifs:
        if vif.port.floating_ip:
            return vif.port.floating_ip
    return ""


def block_device_mapping(instance: Instance) -> dict[str, Node]:
    """`meta-data/block-device-mapping/`, following nova's `instance_block_mapping`."""
    root = instance.root_device_name
    if root is None:
        return dict(_DEFAULT_BLOCK_DEVICE_MAPPING)
    mapping: dict[str, Node] = {"ami": _strip_dev(root), "root": root}
    if instance.default_ephemeral_device:
        mapping["ephemeral0"] = instance.default_ephemeral_device
    if instance.default_swap_device:
        mapping["swap"] = instance.default_swap_device

    volumes: list[str | None] = []
    blanks: list[BlockDevice] = []
    for bdm in instance.block_device_mapping:
        if bdm.destination_type == "volume":
            volumes.append(bdm.device_name)
        elif bdm.source_type == "blank":
            blanks.append(bdm)
    # nova sorts volumes by device name, unnamed ones first, to number them stably.
    volumes.sort(key=lambda name: (name is not None, name or ""))
    for number, name in enumerate(volumes):
        mapping[f"ebs{number}"] = name

    swaps = [bdm for bdm in blanks if bdm.guest_format == "swap"]
    if swaps:
        mapping["swap"] = swaps[-1].device_name
    ephemerals = [bdm for bdm in blanks if bdm.guest_format != "swap"]
    for number, bdm in enumerate(ephemerals):
        mapping[f"ephemeral{number}"] = bdm.device_name
    return mapping


def _strip_dev(device_name: str) -> str:
    return device_name.removeprefix("/dev/")


def ec2_tree(instance: Instance, version: str, dhcp_domain: str) -> dict[str, Node]:
    """The tree under `/<version>` for a known (already resolved) EC2 version."""
    name = hostname(instance, dhcp_domain)
    fixed_ip = first_fixed_ipv4(instance)
    meta: dict[str, Node] = {
        "ami-id": _ec2_id("ami", instance.image_ec2_id),
        "ami-launch-index": instance.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": _ec2_id("i", instance.ec2_id),
        "hostname": name,
        "local-ipv4": fixed_ip if fixed_ip else REQUEST_ADDRESS,
        "reservation-id": instance.reservation_id,
        "security-groups": list(instance.security_groups),
    }
    if instance.key_name:
        # EC2 clients read `public-keys/` as "0=<name>", then `public-keys/0/openssh-key`.
        meta["public-keys"] = {
            "0": {"_name": "0=" + instance.key_name, "openssh-key": instance.public_key}
        }
    if ec2_since(version, "2007-01-19"):
        meta["local-hostname"] = name
        meta["public-hostname"] = name
        meta["public-ipv4"] = first_floating_ip(instance)
    if ec2_since(version, "2007-08-29"):
        meta["instance-type"] = instance.flavor_name
    if ec2_since(version, "2007-12-15"):
        meta["block-device-mapping"] = block_device_mapping(instance)
        if instance.kernel_ec2_id is not None:
            meta["kernel-id"] = _ec2_id("aki", instance.kernel_ec2_id)
        if instance.ramdisk_ec2_id is not None:
            meta["ramdisk-id"] = _ec2_id("ari", instance.ramdisk_ec2_id)
    if ec2_since(version, "2008-02-01"):
        meta["placement"] = {"availability-zone": instance.availability_zone}
    if ec2_since(version, "2008-09-01"):
        meta["instance-action"] = "none"

    tree: dict[str, Node] = {"meta-data": meta}
    if instance.user_data is not None:
        tree["user-data"] = instance.user_data
    return tree


def _ec2_id(prefix: str, number: int | None) -> str | None:
    return None if number is None else f"{prefix}-{number:08x}"
