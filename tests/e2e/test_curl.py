"""curl from each guest, through the DHCP namespace or the router's redirect, reads its own data."""

from __future__ import annotations

import json

import pytest

from .world import METADATA, World, curl, get_json, route_via

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

SERVED = ["a_dhcp", "a_router", "b_dhcp", "b_router"]


@pytest.mark.parametrize("key", SERVED)
def test_guest_takes_the_path_it_was_given(world: World, key: str) -> None:
    guest = world.guests[key]
    gateway = ".2" if guest.path == "dhcp" else ".1"  # DHCP port, or the router
    assert route_via(guest.netns, "169.254.169.254").endswith(gateway)


@pytest.mark.parametrize("key", SERVED)
def test_openstack_documents_are_the_guests_own(world: World, key: str) -> None:
    guest = world.guests[key]
    meta = get_json(guest.netns, f"{METADATA}/openstack/latest/meta_data.json")
    assert meta["uuid"] == guest.uuid
    assert meta["name"] == f"vm-{key.replace('_', '-')}"
    assert meta["project_id"] == guest.project_id
    assert meta["public_keys"] == {f"key-{key}": guest.public_key}
    user_data = curl(guest.netns, f"{METADATA}/openstack/latest/user_data")
    assert (user_data.status, user_data.body) == (200, guest.user_data)
    network = get_json(guest.netns, f"{METADATA}/openstack/2018-08-27/network_data.json")
    assert [link["ethernet_mac_address"] for link in network["links"]] == [guest.mac]
    versions = curl(guest.netns, f"{METADATA}/openstack")
    assert versions.status == 200 and "latest" in versions.body.split("\n")


@pytest.mark.parametrize("key", SERVED)
def test_ec2_tree_is_the_guests_own(world: World, key: str) -> None:
    guest = world.guests[key]
    leaves = {
        "instance-id": guest.ec2_id,
        "local-ipv4": guest.address,
        "hostname": guest.hostname + ".novalocal",
        "placement/availability-zone": "nova",
        "public-keys/0/openssh-key": guest.public_key,
    }
    for leaf, expected in leaves.items():
        reply = curl(guest.netns, f"{METADATA}/latest/meta-data/{leaf}")
        assert reply.status == 200, (leaf, reply)
        assert reply.body.strip() == expected, leaf
    user_data = curl(guest.netns, f"{METADATA}/2009-04-04/user-data")
    assert (user_data.status, user_data.body) == (200, guest.user_data)
    listing = curl(guest.netns, f"{METADATA}/latest/meta-data/")
    assert "instance-id" in listing.body.split("\n")


def test_documents_are_json_and_carry_no_one_elses_identity(world: World) -> None:
    guest = world.guests["a_dhcp"]
    others = [vm.uuid for vm in world.guests.values() if vm.instance and vm is not guest]
    for path in ("meta_data.json", "network_data.json", "vendor_data.json", "vendor_data2.json"):
        reply = curl(guest.netns, f"{METADATA}/openstack/latest/{path}")
        assert reply.status == 200, (path, reply)
        json.loads(reply.body)
        assert not any(uuid in reply.body for uuid in others), path
