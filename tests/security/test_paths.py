"""Odd paths from guests: the documented status, never a 5xx, never another instance's data."""

from __future__ import annotations

import pytest

from e2e.world import World
from security.harness import Baseline, exchange, leaks, revision, secrets_of_others

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

MD = "/openstack/latest/meta_data.json"
# path -> the status a guest with an instance gets (a guest without one: always 404).
# 200 means its own document: dot segments and percent-encoded slashes are resolved
# and `//` collapsed by the metadata API's router before the lookup.
PATHS = {
    "/openstack/latest/../latest/meta_data.json": 200,
    "/openstack/../openstack/latest/meta_data.json": 200,
    "/../../openstack/latest/meta_data.json": 200,
    "/latest/meta-data/../../openstack/latest/meta_data.json": 200,
    "/openstack/latest/password/../meta_data.json": 200,
    "/openstack/latest/%2e%2e/latest/meta_data.json": 200,
    "/openstack/latest/%2E%2E/%2e%2e/openstack/latest/meta_data.json": 200,
    "/openstack/latest/.%2e/meta_data.json": 404,
    "/%2e%2e/%2e%2e/etc/passwd": 404,
    "/openstack/latest/../../../../etc/passwd": 404,
    "/openstack//latest/meta_data.json": 200,
    "///openstack/latest/meta_data.json": 200,
    "/latest/meta-data//instance-id": 200,
    "/latest/meta-data/./instance-id": 200,
    "/latest/meta-data/instance-id/": 200,
    # A leading `//` reads as a network-path reference: the rest is the version list.
    "//openstack//latest//meta_data.json": 200,
    "//169.254.169.254/openstack/latest/meta_data.json": 200,
    "/openstack/latest/meta_data.json;x=1": 404,
    "/openstack;x=1/latest/meta_data.json": 404,
    "/latest/meta-data/instance-id;jsessionid=1": 404,
    "/openstack%2flatest%2fmeta_data.json": 200,
    "/openstack/latest%2Fmeta_data.json": 200,
    "/openstack%5clatest%5cmeta_data.json": 404,
    "/openstack\\latest\\meta_data.json": 404,
    "/openstack/latest/%ff%fe": 404,
    "/openstack/latest/%c0%ae%c0%ae/meta_data.json": 404,
    "/openstack/latest/%ed%a0%80": 404,
    "/openstack/latest/%00": 404,
    "/openstack/latest/meta_data.json%00": 404,
    "/openstack/latest/%zz": 404,
    "/openstack/latest/%": 404,
    "/openstack/latest/%2": 404,
    "/OPENSTACK/LATEST/META_DATA.JSON": 404,
    "/openstack/9999-01-01/meta_data.json": 404,
    "/latest/meta-data/public-keys/1/openssh-key": 404,
    "/latest/meta-data/public-keys/-1/openssh-key": 404,
    "/latest/meta-data/public-keys/00/openssh-key": 404,
    MD + "/": 200,
    MD + "?": 200,
    MD + "#fragment": 200,
    MD + "?x=" + "q" * 8000: 200,
    # The metadata API reads request lines of up to 8190 bytes: a longer path is its 400.
    "/" + "a" * 8192: 400,
    "/openstack/latest/" + "x/" * 4000: 404,
    "/latest/meta-data/" + "a" * 7000: 404,
    # The proxy's own limit on the request head (16 KiB).
    "/" + "b" * 17000: 431,
    "*": 400,
    # Absolute form: the API uses the path; the host named is ignored.
    "http://169.254.169.254:80" + MD: 200,
    "HTTP://OTHER" + MD: 200,
    "http://10.77.0.6" + MD: 200,
}


@pytest.mark.parametrize("key", ["a_dhcp", "b_router", "a_orphan"])
def test_odd_paths(world: World, intact: Baseline, key: str) -> None:
    guest = world.guests[key]
    cases = [
        (path, [b"GET %s HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n" % path.encode()])
        for path in PATHS
    ]
    secrets = secrets_of_others(world, key)
    for outcome in exchange(cases, netns=guest.netns):
        expected = PATHS[outcome.case]
        if guest.instance is None and expected != 431:  # 431: the proxy's, before any lookup
            expected = 404
        assert outcome.statuses == [expected], outcome.describe()
        assert not leaks(outcome.raw, secrets), outcome.describe()
        if expected == 200 and guest.instance is not None and b'"uuid"' in outcome.raw:
            assert guest.uuid.encode() in outcome.raw, outcome.describe()
    assert revision(world) == intact.revision
