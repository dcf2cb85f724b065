"""API stopped: guests get 503 at once; API restarted: served again by the same agent and proxy."""

from __future__ import annotations

import time

import pytest

from .world import AGENT_UPSTREAM_TIMEOUT, METADATA, World, cloud_init, curl

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PATHS = ("/openstack/latest/meta_data.json", "/latest/meta-data/instance-id")


def test_api_outage_is_503_fast_then_served_again(world: World) -> None:
    chain = world.chain
    guests = [world.guests["a_dhcp"], world.guests["b_router"]]
    before = chain.pids()
    for guest in guests:  # served, and the agent's cache is warm
        assert curl(guest.netns, METADATA + PATHS[0]).status == 200

    chain.stop_api()
    for guest in guests:
        for path in PATHS:
            reply = curl(guest.netns, METADATA + path)
            assert reply.status == 503, (guest.key, path, reply)
            # Refused connections are reported at once, not after the agent's timeout.
            assert reply.seconds < AGENT_UPSTREAM_TIMEOUT / 5, (guest.key, path, reply)

    chain.start_api()  # same config, database and ports
    deadline = time.monotonic() + 15
    for guest in guests:
        while (reply := curl(guest.netns, METADATA + PATHS[1])).status != 200:
            assert time.monotonic() < deadline, f"{guest.key} still gets {reply}"
            time.sleep(0.1)
        assert reply.body == guest.ec2_id

    after = chain.pids()
    assert (after["agent"], after["proxy"]) == (before["agent"], before["proxy"])
    assert after["api"] != before["api"]
    probe = cloud_init(guests[0].netns, "--datasource", "openstack")["openstack"]
    assert probe["ok"] and probe["instance_id"] == guests[0].uuid, probe
