"""Debian's cloud-init, run inside each guest, accepts what the chain serves and reads its own data.

The probe runs cloud-init's OpenStack datasource (DMI detection overridden) and its EC2
datasource (a non-AWS platform, IMDSv1 as on a Nova guest) with /usr/bin/python3, through
the DHCP namespace (a /32 route via the DHCP port) and through the router (the default
route, redirected to the proxy's :9697), for guests of two projects whose addresses overlap.
"""

from __future__ import annotations

import pytest

from .world import World, cloud_init

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

# The EC2 datasource probes newer API versions first; 404 there is what a Nova guest sees.
EC2_VERSION_PROBES = {
    f"http://169.254.169.254/{version}/meta-data/instance-id"
    for version in ("2021-03-23", "2018-09-24", "2016-09-02")
}


@pytest.mark.parametrize("key", ["a_dhcp", "a_router", "b_dhcp", "b_router"])
def test_cloud_init_reads_its_own_instance(world: World, key: str) -> None:
    guest = world.guests[key]
    results = cloud_init(guest.netns)

    openstack = results["openstack"]
    assert openstack["ok"], openstack.get("log") or openstack
    assert openstack["instance_id"] == guest.uuid
    assert openstack["local_hostname"] == guest.hostname
    assert openstack["public_keys"] == [guest.public_key]
    assert openstack["userdata"] == guest.user_data
    assert openstack["availability_zone"] == "nova"
    # meta-data documents, the version list twice and the EC2 sub-crawl, each answered.
    assert openstack["requests"] >= 20
    assert openstack["failed_requests"] == []

    ec2 = results["ec2"]
    assert ec2["ok"], ec2.get("log") or ec2
    assert ec2["instance_id"] == guest.ec2_id
    assert ec2["local_hostname"] == guest.hostname
    assert ec2["public_keys"] == [guest.public_key]
    assert ec2["userdata"] == guest.user_data
    assert ec2["availability_zone"] == "nova"
    assert ec2["requests"] >= 20
    assert {url for _, url, _ in ec2["failed_requests"]} <= EC2_VERSION_PROBES
    # Every request of both crawls left the guest and came back within a second or so.
    assert openstack["seconds"] < 5 and ec2["seconds"] < 5
