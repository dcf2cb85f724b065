"""The OpenStack tree's documents: meta_data.json, the version listing, vendordata."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from metastack.metadata.model import DeviceTag, Instance
from metastack.metadata.results import SEED_PLACEHOLDER
from metastack.metadata.versions import (
    EPOXY,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    openstack_since,
)

JsonObject = dict[str, object]


def dump_json(value: object) -> bytes:
    """JSON as nova writes it: json.dumps defaults (", " / ": ", non-ASCII escaped)."""
    return json.dumps(value).encode("ascii")


def version_listing(instance: Instance, version: str) -> bytes:
    """Body of `/openstack/<version>`: the files this version offers, in nova's order."""
    names = ["meta_data.json"]
    if instance.user_data is not None:
        names.append("user_data")
    if openstack_since(version, GRIZZLY):
        names.append("password")
    if openstack_since(version, HAVANA):
        names.append("vendor_data.json")
    if openstack_since(version, LIBERTY):
        names.append("network_data.json")
    if openstack_since(version, NEWTON_TWO):
        names.append("vendor_data2.json")
    return "\n".join(names).encode("ascii")


def meta_data_json(instance: Instance, version: str, hostname: str) -> tuple[bytes, bool]:
    """Body of meta_data.json and whether it holds SEED_PLACEHOLDER for `random_seed`.

    `random_seed` must change on every request, so from 2013-04-04 on the body is
    rendered once with a placeholder where the seed's characters go.
    """
    head: JsonObject = {"uuid": instance.uuid}
    if instance.metadata:
        head["meta"] = dict(instance.metadata)
    if instance.key_name and instance.public_key is not None:
        head["public_keys"] = {instance.key_name: instance.public_key}
        head["keys"] = [
            {"name": instance.key_name, "type": instance.key_type, "data": instance.public_key}
        ]
    head["hostname"] = hostname
    head["name"] = instance.name
    head["launch_index"] = instance.launch_index
    head["availability_zone"] = instance.availability_zone

    # Keys that nova adds after random_seed.
    tail: JsonObject = {}
    if openstack_since(version, LIBERTY):
        tail["project_id"] = instance.project_id
    if openstack_since(version, NEWTON_ONE):
        tail["devices"] = _devices(instance.device_tags, version)
    if openstack_since(version, VICTORIA):
        tail["dedicated_cpus"] = sorted(instance.dedicated_cpus)

    if not openstack_since(version, GRIZZLY):
        return dump_json(head | tail), False
    # Splice the seed between the two halves, keeping json.dumps's exact layout.
    body = dump_json(head)[:-1] + b', "random_seed": "' + SEED_PLACEHOLDER + b'"'
    body += (b", " + dump_json(tail)[1:]) if tail else b"}"
    return body, True


def _devices(tags: tuple[DeviceTag, ...], version: str) -> list[JsonObject]:
    """The `devices` list, following nova's `_get_device_metadata`."""
    vlans_shown = openstack_since(version, OCATA)
    trusted_shown = openstack_since(version, ROCKY)
    shares_shown = openstack_since(version, EPOXY)
    devices: list[JsonObject] = []
    for tag in tags:
        device: JsonObject = {}
        if tag.type == "nic":
            if vlans_shown and tag.vlan is not None:
                device["vlan"] = tag.vlan
            if trusted_shown:
                device["vf_trusted"] = tag.vf_trusted
            device["type"] = "nic"
            device["mac"] = tag.mac
            # An untagged NIC is only worth listing for its vlan or vf_trusted.
            if not (tag.tags or "vlan" in device or "vf_trusted" in device):
                continue
        elif tag.type == "disk":
            device["type"] = "disk"
            if tag.serial is not None:
                device["serial"] = tag.serial
            if tag.path is not None:
                device["path"] = tag.path
        elif tag.type == "share" and shares_shown:
            device["type"] = "share"
            device["share_id"] = tag.share_id
            device["tag"] = tag.tag
        else:
            continue
        device["bus"] = tag.bus if tag.bus is not None else "none"
        device["address"] = (
            tag.address if tag.bus is not None and tag.address is not None else "none"
        )
        if tag.tags:
            device["tags"] = list(tag.tags)
        devices.append(device)
    return devices


def vendor_data_json(static: object | None) -> bytes:
    """Body of vendor_data.json: the static file's JSON, `{}` when none is configured."""
    return dump_json({} if static is None else static)


def render_vendor_data2(static: object | None, dynamic: Mapping[str, object]) -> bytes:
    """Body of vendor_data2.json.

    `static` is the static vendordata (None when StaticJSON is disabled); `dynamic`
    maps each dynamic target name to its reply, in target order. A dynamic name that
    collides with a key already present is dropped, as nova does.
    """
    document: JsonObject = {}
    if static is not None:
        document["static"] = static
    for name, reply in dynamic.items():
        if name not in document:
            document[name] = reply
    return dump_json(document)


def vendordata_request_body(instance: Instance) -> dict[str, object]:
    """The JSON body nova POSTs to each dynamic vendordata target."""
    user_data = instance.user_data
    return {
        "project-id": instance.project_id,
        "instance-id": instance.uuid,
        "image-id": instance.image_ref,
        "user-data": None if user_data is None else base64.b64encode(user_data).decode("ascii"),
        "hostname": instance.hostname,
        "metadata": dict(instance.metadata),
        "boot-roles": instance.boot_roles,
    }
