"""Our control API's objects as nova holds the same instances: the instances file that
src/metastack/lab/upstream/nova_metadata.py builds nova's `Instance` objects from.

Each field is what nova would have in its database (and neutron would answer) for an
instance created with the same request: ids, names, key, user data, metadata items,
devices, block devices, and the network info nova's neutron API builds from the ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]


def ec2_number(ec2_id: str) -> int:
    """`i-0000000a` -> 10."""
    return int(ec2_id.split("-", 1)[1], 16)


def _ec2(prefix: str, number: int | None) -> str | None:
    return None if number is None else f"{prefix}-{number:08x}"


def nova_instance(
    instance: Obj,
    *,
    ports: Mapping[str, Obj],
    subnets: Mapping[str, Obj],
    networks: Mapping[str, Obj],
    dhcp_servers: Mapping[str, str],
    image_numbers: Mapping[str, int],
    password: str = "",
) -> dict[str, Any]:
    """One entry of the instances file for `instance` (a control API instance object).

    `ports`, `subnets`, `networks`: every such object by id; `dhcp_servers`: subnet id ->
    address of the DHCP port on it; `image_numbers`: image uuid -> the EC2 integer our
    store gave it (nova keeps the same mapping in its own table).
    """

    def image(ref: str | None, prefix: str) -> str | None:
        return _ec2(prefix, image_numbers[ref]) if ref else None

    return {
        "id": ec2_number(instance["ec2_id"]),
        "uuid": instance["uuid"],
        "user_id": instance["user_id"],
        "project_id": instance["project_id"],
        "display_name": instance["name"],
        "hostname": instance["hostname"],
        "launch_index": instance["launch_index"],
        "reservation_id": instance["reservation_id"],
        "availability_zone": instance["availability_zone"],
        "image_ref": instance["image_ref"],
        "kernel_id": instance["kernel_id"],
        "ramdisk_id": instance["ramdisk_id"],
        "ec2_ids": {
            "instance_id": instance["ec2_id"],
            "ami_id": image(instance["image_ref"], "ami"),
            "kernel_id": image(instance["kernel_id"], "aki"),
            "ramdisk_id": image(instance["ramdisk_id"], "ari"),
        },
        "flavor_name": instance["flavor_name"],
        "root_device_name": instance["root_device_name"],
        "default_ephemeral_device": instance["default_ephemeral_device"],
        "default_swap_device": instance["default_swap_device"],
        "block_device_mapping": [
            {
                "device_name": bdm["device_name"],
                "source_type": bdm["source_type"],
                "destination_type": bdm["destination_type"],
                "guest_format": bdm["guest_format"],
                "boot_index": bdm["boot_index"],
                "volume_id": bdm["volume_id"],
                "no_device": bdm["no_device"],
            }
            for bdm in instance["block_device_mapping"]
        ],
        "key_name": instance["key_name"],
        "key_type": instance["key_type"],
        "key_data": instance["public_key"],
        "user_data": instance["user_data"],
        "metadata": list(instance["metadata"].items()),
        "security_groups": list(instance["security_groups"]),
        "devices": list(instance["device_tags"]),
        "dedicated_cpus": list(instance["dedicated_cpus"]),
        "password": password,
        "vifs": [
            _vif(ports[port_id], subnets, networks, dhcp_servers) for port_id in instance["ports"]
        ],
    }


def _vif(
    port: Obj, subnets: Mapping[str, Obj], networks: Mapping[str, Obj], dhcp: Mapping[str, str]
) -> dict[str, Any]:
    network = networks[port["network_id"]]
    order: list[str] = []
    for fixed in port["fixed_ips"]:
        if fixed["subnet_id"] not in order:
            order.append(fixed["subnet_id"])
    floating = [port["floating_ip"]] if port.get("floating_ip") else []
    items = []
    for subnet_id in order:
        subnet = subnets[subnet_id]
        addresses = [f["ip_address"] for f in port["fixed_ips"] if f["subnet_id"] == subnet_id]
        items.append(
            {
                "cidr": subnet["cidr"],
                "gateway": subnet["gateway_ip"],
                "enable_dhcp": subnet["enable_dhcp"],
                "ipv6_address_mode": subnet.get("ipv6_address_mode"),
                "dhcp_server": dhcp.get(subnet_id),
                "dns": list(subnet["dns_nameservers"]),
                "routes": [
                    {"cidr": r["destination"], "gateway": r["nexthop"]}
                    for r in subnet["host_routes"]
                ],
                # nova hangs a port's floating IP on its first fixed address
                "ips": [
                    {"address": a, "floating_ips": floating if (i == 0 and n == 0) else []}
                    for n, a in enumerate(addresses)
                    for i in [order.index(subnet_id)]
                ],
            }
        )
    return {
        "id": port["id"],
        "address": port["mac_address"],
        "type": port["vif_type"],
        "devname": port["device_name"],
        "network": {
            "id": network["id"],
            "label": network["name"],
            "mtu": network["mtu"],
            "project_id": network["project_id"],
        },
        "subnets": items,
    }
