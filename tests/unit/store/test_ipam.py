"""Pure helpers: hostnames as nova derives them, MACs, SLAAC addresses, free-address search."""

from __future__ import annotations

import re

import pytest

from metastack.errors import Conflict
from metastack.store.ipam import (
    eui64_address,
    generate_mac,
    generate_reservation_id,
    next_free_address,
    sanitize_hostname,
)


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("My VM_1", "my-vm-1"),
        ("web.example.com", "web-example-com"),
        ("  -ok-  ", "ok"),
        ("a$b%c", "abc"),
        ("x" * 80, "x" * 63),
        ("ünïcode", "ünïcode"),
        ("日本", "Server-1"),
    ],
)
def test_hostname_like_nova(name: str, hostname: str) -> None:
    assert sanitize_hostname(name, "Server-1") == hostname


def test_generated_ids_have_the_openstack_shapes() -> None:
    assert re.fullmatch(r"fa:16:3e(:[0-9a-f]{2}){3}", generate_mac())
    assert re.fullmatch(r"r-[0-9a-z]{8}", generate_reservation_id())


def test_eui64() -> None:
    assert eui64_address("fd00::/64", "fa:16:3e:ed:f4:06") == "fd00::f816:3eff:feed:f406"


def test_next_free_skips_gateway_and_used() -> None:
    assert next_free_address("10.0.0.0/24", {"10.0.0.2"}, "10.0.0.1") == "10.0.0.3"
    assert next_free_address("fd00::/64", set(), "fd00::1") == "fd00::2"
    with pytest.raises(Conflict):
        next_free_address("10.0.0.0/30", {"10.0.0.2"}, "10.0.0.1")
