"""IPv6 guests reach fe80::a9fe:a9fe on the DHCP port and are found by the MAC in their address."""

from __future__ import annotations

import json
import subprocess

import pytest

from .world import METADATA_V6, World, curl, get_json

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def eui64_link_local(mac: str) -> str:
    """The fe80:: address the kernel derives from a MAC (modified EUI-64)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    words = [
        (octets[0] << 8) | octets[1],
        (octets[2] << 8) | 0xFF,
        (0xFE << 8) | octets[3],
        (octets[4] << 8) | octets[5],
    ]
    return "fe80::" + ":".join(f"{word:x}" for word in words)


@pytest.mark.parametrize("key", ["a_dhcp", "b_dhcp", "a_router", "b_router"])
def test_link_local_metadata_is_the_guests_own(world: World, key: str) -> None:
    guest = world.guests[key]
    # The guest's link-local address is the EUI-64 of its NIC's MAC, the port's MAC.
    assert link_local(guest.netns) == eui64_link_local(guest.mac)
    meta = get_json(guest.netns, f"{METADATA_V6}/openstack/latest/meta_data.json")
    assert (meta["uuid"], meta["project_id"]) == (guest.uuid, guest.project_id)
    reply = curl(guest.netns, f"{METADATA_V6}/latest/meta-data/instance-id")
    assert (reply.status, reply.body) == (200, guest.ec2_id)
    # Found by MAC, the port is the one holding the guest's IPv4 address as well.
    local = curl(guest.netns, f"{METADATA_V6}/latest/meta-data/local-ipv4")
    assert (local.status, local.body) == (200, guest.address)


def test_unknown_mac_gets_404(world: World) -> None:
    orphan = world.guests["a_orphan"]
    reply = curl(orphan.netns, f"{METADATA_V6}/openstack/latest/meta_data.json")
    assert reply.status == 404


def link_local(netns: str) -> str:
    """The guest's fe80:: address on eth0."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0]["addr_info"][0]["local"])
