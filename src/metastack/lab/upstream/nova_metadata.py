"""nova's metadata API (its own WSGI app) with instances read from a JSON file, not a database.

Run with the upstream virtual environment's Python (nova installed); this file imports
nothing from metastack. nova's `MetadataRequestHandler` is served as it is; only the
lookups nova would make in its databases and in neutron are answered from INSTANCES
(a JSON file, re-read when it changes), the way nova's own unit tests build instances
(`nova/tests/unit/test_metadata.py::fake_inst_obj`):

- `nova.api.metadata.base.get_metadata_by_instance_id` builds `InstanceMetadata` from a
  fake `objects.Instance` (unknown uuid: `InstanceNotFound`, which nova answers 404);
- the instance's security group names, block device mappings and network info (a
  `NetworkInfo` built as nova's neutron API builds it) come from the same file.

    python nova_metadata.py --config-file nova.conf --instances instances.json --fd N

serves on the listening TCP socket inherited as file descriptor N, and prints "serving"
once it does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import sys
import threading
from typing import Any
from wsgiref import simple_server

import nova.conf
from nova import config as nova_config
from nova import exception, objects
from nova.api.metadata import base, handler
from nova.network import model as network_model
from nova.network import security_group_api
from nova.objects import instance_numa
from nova.objects import virt_device_metadata as device_obj
from oslo_log import log as logging

CONF = nova.conf.CONF
_BUSES: dict[str, Any] = {
    "pci": device_obj.PCIDeviceBus,
    "usb": device_obj.USBDeviceBus,
    "scsi": device_obj.SCSIDeviceBus,
    "ide": device_obj.IDEDeviceBus,
    "xen": device_obj.XenDeviceBus,
}


class Instances:
    """The instances file, parsed again whenever its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = -1
        self._by_uuid: dict[str, dict[str, Any]] = {}

    def get(self, uuid: str) -> dict[str, Any] | None:
        with self._lock:
            stamp = os.stat(self.path).st_mtime_ns
            if stamp != self._stamp:
                with open(self.path) as handle:
                    doc = json.load(handle)
                self._by_uuid = {item["uuid"]: item for item in doc["instances"]}
                self._stamp = stamp
            return self._by_uuid.get(uuid)


def network_info(vifs: list[dict[str, Any]]) -> Any:
    """A NetworkInfo as nova's neutron API builds it (`_nw_info_build_network`,
    `_get_subnets_from_port`) from the ports, subnets and networks in the file."""
    built = []
    for vif in vifs:
        subnets = []
        for item in vif["subnets"]:
            subnet_meta: dict[str, Any] = {"enable_dhcp": bool(item["enable_dhcp"])}
            if item.get("ipv6_address_mode"):
                subnet_meta["ipv6_address_mode"] = item["ipv6_address_mode"]
            if item.get("dhcp_server"):
                subnet_meta["dhcp_server"] = item["dhcp_server"]
            subnet = network_model.Subnet(
                cidr=item["cidr"],
                gateway=network_model.IP(address=item["gateway"], type="gateway"),
                **subnet_meta,
            )
            for dns in item["dns"]:
                subnet.add_dns(network_model.IP(address=dns, type="dns"))
            for route in item["routes"]:
                subnet.add_route(
                    network_model.Route(
                        cidr=route["cidr"],
                        gateway=network_model.IP(address=route["gateway"], type="gateway"),
                    )
                )
            for ip in item["ips"]:
                fixed = network_model.FixedIP(address=ip["address"])
                for floating in ip.get("floating_ips", []):
                    fixed.add_floating_ip(network_model.IP(address=floating, type="floating"))
                subnet.add_ip(fixed)
            subnets.append(subnet)
        network = network_model.Network(
            id=vif["network"]["id"],
            bridge="br-int",
            label=vif["network"]["label"],
            subnets=subnets,
            mtu=vif["network"]["mtu"],
            tenant_id=vif["network"]["project_id"],
        )
        built.append(
            network_model.VIF(
                id=vif["id"],
                address=vif["address"],
                network=network,
                type=vif["type"],
                devname=vif["devname"],
                ovs_interfaceid=vif["id"],
                active=True,
            )
        )
    return network_model.NetworkInfo(built)


def _device(item: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {}
    if item.get("bus"):
        bus_class = _BUSES[item["bus"]]
        fields["bus"] = bus_class(address=item["address"]) if item.get("address") else bus_class()
    if item.get("tags"):
        fields["tags"] = list(item["tags"])
    if item["type"] == "nic":
        fields["mac"] = item["mac"]
        if item.get("vlan") is not None:
            fields["vlan"] = item["vlan"]
        fields["vf_trusted"] = bool(item.get("vf_trusted"))
        return device_obj.NetworkInterfaceMetadata(**fields)
    if item["type"] == "disk":
        for key in ("serial", "path"):
            if item.get(key):
                fields[key] = item[key]
        return device_obj.DiskMetadata(**fields)
    return device_obj.ShareMetadata(share_id=item["share_id"], tag=item["tag"], **fields)


def fake_instance(context: Any, item: dict[str, Any]) -> Any:
    """An `objects.Instance` with every field InstanceMetadata reads already loaded."""
    instance = objects.Instance(
        context=context,
        id=item["id"],
        uuid=item["uuid"],
        user_id=item["user_id"],
        project_id=item["project_id"],
        display_name=item["display_name"],
        hostname=item["hostname"],
        launch_index=item["launch_index"],
        reservation_id=item["reservation_id"],
        availability_zone=item["availability_zone"],
        image_ref=item["image_ref"] or "",
        kernel_id=item["kernel_id"],
        ramdisk_id=item["ramdisk_id"],
        key_name=item["key_name"],
        key_data=item["key_data"],
        user_data=item["user_data"],
        root_device_name=item["root_device_name"],
        default_ephemeral_device=item["default_ephemeral_device"],
        default_swap_device=item["default_swap_device"],
        metadata=dict(item["metadata"]),
        system_metadata=_password_items(item["password"]),
        host="interop",
        vcpus=1,
        security_groups=objects.SecurityGroupList(),
    )
    instance.ec2_ids = objects.EC2Ids(**item["ec2_ids"])
    keypairs = []
    if item["key_name"] and item["key_data"] is not None:
        keypairs.append(
            objects.KeyPair(
                name=item["key_name"], type=item["key_type"], public_key=item["key_data"]
            )
        )
    instance.keypairs = objects.KeyPairList(objects=keypairs)
    devices = [_device(d) for d in item["devices"]]
    instance.device_metadata = objects.InstanceDeviceMetadata(devices=devices) if devices else None
    if item["dedicated_cpus"]:
        cell = instance_numa.InstanceNUMACell(
            id=0, cpuset=set(), pcpuset=set(item["dedicated_cpus"]), memory=512
        )
        instance.numa_topology = instance_numa.InstanceNUMATopology(cells=[cell])
    else:
        instance.numa_topology = None
    instance.flavor = objects.Flavor(
        name=item["flavor_name"],
        flavorid="1",
        memory_mb=512,
        vcpus=1,
        root_gb=1,
        ephemeral_gb=0,
        swap=0,
    )
    instance.info_cache = objects.InstanceInfoCache(
        context=context, instance_uuid=item["uuid"], network_info=network_info(item["vifs"])
    )
    return instance


def _password_items(password: str) -> dict[str, str]:
    # nova keeps the guest's password in 4 system metadata chunks of 255 characters
    return (
        {f"password_{i}": password[i * 255 : (i + 1) * 255] for i in range(4)} if password else {}
    )


def install(instances: Instances) -> None:
    """Answer nova's database and neutron lookups from the instances file."""
    by_uuid: dict[str, dict[str, Any]] = {}

    def get_metadata_by_instance_id(instance_id: Any, address: Any, ctxt: Any = None) -> Any:
        if isinstance(instance_id, bytes):
            instance_id = instance_id.decode()
        item = instances.get(instance_id)
        if item is None:
            raise exception.InstanceNotFound(instance_id=instance_id)
        by_uuid[item["uuid"]] = item
        from nova import context as nova_context

        return base.InstanceMetadata(fake_instance(nova_context.get_admin_context(), item), address)

    def get_instance_security_groups(context: Any, instance: Any, detailed: bool = False) -> Any:
        return [{"name": name} for name in by_uuid[instance.uuid]["security_groups"]]

    def get_bdms(self: Any) -> Any:
        item = by_uuid[self.uuid]
        return objects.BlockDeviceMappingList(
            objects=[
                objects.BlockDeviceMapping(instance_uuid=self.uuid, **bdm)
                for bdm in item["block_device_mapping"]
            ]
        )

    base.get_metadata_by_instance_id = get_metadata_by_instance_id
    security_group_api.get_instance_security_groups = get_instance_security_groups
    objects.Instance.get_bdms = get_bdms


class _Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--fd", type=int, required=True, help="a listening TCP socket")
    args = parser.parse_args(argv)

    nova_config.parse_args(
        ["nova-api-metadata", "--config-file", args.config_file],
        configure_db=False,
        init_rpc=False,
    )
    logging.setup(CONF, "nova")
    objects.register_all()
    install(Instances(args.instances))
    app = handler.MetadataRequestHandler()
    listener = socket.socket(fileno=args.fd)
    host, port = listener.getsockname()[:2]
    server = _Server((host, port), _Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_name, server.server_port = host, port
    server.setup_environ()
    server.set_app(app)
    print(f"serving nova's metadata API on {host}:{port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
