"""Overlapping addresses, forged identity headers and unknown addresses never leak metadata."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from .world import METADATA, World, curl, get_json

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

MD = f"{METADATA}/openstack/latest/meta_data.json"


@pytest.mark.parametrize("pair", [("a_dhcp", "b_dhcp"), ("a_router", "b_router")])
def test_same_address_in_two_projects_gets_two_identities(
    world: World, pair: tuple[str, str]
) -> None:
    first, second = (world.guests[key] for key in pair)
    assert first.address == second.address and first.project_id != second.project_id
    for _ in range(3):  # interleaved, so a cache keyed by address alone would show
        for guest in (first, second):
            meta = get_json(guest.netns, MD)
            assert (meta["uuid"], meta["project_id"]) == (guest.uuid, guest.project_id)
            instance_id = curl(guest.netns, f"{METADATA}/latest/meta-data/instance-id")
            assert instance_id.body == guest.ec2_id


def _forgeries(world: World, secret: str) -> dict[str, list[str]]:
    victim = world.guests["b_dhcp"]  # another project's guest at the same address
    signature = hmac.new(secret.encode(), victim.uuid.encode(), hashlib.sha256).hexdigest()
    single = {
        "x-forwarded-for": [f"X-Forwarded-For: {world.guests['a_router'].address}"],
        "forwarded": [f"Forwarded: for={world.guests['a_router'].address}"],
        "network-id": [f"X-Neutron-Network-ID: {victim.network_id}"],
        "router-id": [f"X-Neutron-Router-ID: {world.routers['b']}"],
        "instance-id": [f"X-Instance-ID: {victim.uuid}"],
        "tenant-id": [f"X-Tenant-ID: {victim.project_id}"],
        "ovn": [f"X-OVN-Network-ID: {victim.network_id}"],
    }
    # A correctly signed identity of the victim (the secret known): still not accepted.
    signed = [
        f"X-Instance-ID: {victim.uuid}",
        f"X-Instance-ID-Signature: {signature}",
        f"X-Tenant-ID: {victim.project_id}",
        f"X-Neutron-Network-ID: {victim.network_id}",
        f"X-Forwarded-For: {victim.address}",
    ]
    lower = [line.lower() for line in signed]  # header names are case-insensitive
    return {**single, "signed": signed, "signed-lowercase": lower}


@pytest.mark.parametrize("key", ["a_dhcp", "a_router"])
def test_forged_identity_headers_are_ignored(world: World, key: str) -> None:
    guest = world.guests[key]
    for name, headers in _forgeries(world, world.chain.secret).items():
        meta = get_json(guest.netns, MD, *headers)
        assert (meta["uuid"], meta["project_id"]) == (guest.uuid, guest.project_id), name
        reply = curl(guest.netns, f"{METADATA}/latest/meta-data/instance-id", *headers)
        assert reply.body == guest.ec2_id, name


def test_address_without_a_port_gets_404(world: World) -> None:
    orphan = world.guests["a_orphan"]
    for url in (MD, f"{METADATA}/latest/meta-data/instance-id"):
        assert curl(orphan.netns, url).status == 404, url
    # Claiming a served guest's address in a header does not help either.
    claimed = f"X-Forwarded-For: {world.guests['a_dhcp'].address}"
    assert curl(orphan.netns, MD, claimed).status == 404
