"""Parsing the proxy's headers (ours, OVN's haproxy): addresses, EUI-64 MACs, ids, and every
way they can be wrong."""

from __future__ import annotations

import ipaddress

import pytest

from metastack.agent.app import proxy_headers
from metastack.agent.source import Source, mac_from_eui64, parse_forwarded_for, parse_origin
from metastack.errors import InvalidInput
from metastack.http11 import Request


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.5", Source(ip_address="10.0.0.5")),
        (" 10.0.0.5 ", Source(ip_address="10.0.0.5")),
        ("::ffff:10.0.0.5", Source(ip_address="10.0.0.5")),
        ("::FFFF:a00:5", Source(ip_address="10.0.0.5")),
        ("2001:DB8::0:1", Source(ip_address="2001:db8::1")),
        ("fe80::f816:3eff:fe12:3456", Source(mac_address="fa:16:3e:12:34:56")),
        ("fe80::f816:3eff:fe12:3456%eth0", Source(mac_address="fa:16:3e:12:34:56")),
        ("fe80::1", Source()),  # not EUI-64: no MAC, nothing can match
        ("169.254.1.1", Source(ip_address="169.254.1.1")),
    ],
)
def test_forwarded_for(value: str, expected: Source) -> None:
    assert parse_forwarded_for(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "10.0.0.5, 10.0.0.6", "10.0.0.5,", "10.0.0.256", "10.0.0.5:80", "[::1]", "host", "1e3"],
)
def test_malformed_forwarded_for(value: str) -> None:
    with pytest.raises(InvalidInput, match="X-Forwarded-For"):
        parse_forwarded_for(value)


def test_eui64_round_trip_flips_the_universal_local_bit() -> None:
    # RFC 4291 appendix A: 00:1b:21:aa:bb:cc -> 021b:21ff:feaa:bbcc
    assert mac_from_eui64(ipaddress.IPv6Address("fe80::21b:21ff:feaa:bbcc")) == "00:1b:21:aa:bb:cc"
    assert mac_from_eui64(ipaddress.IPv6Address("fe80::1234:5678:9abc:def0")) is None


def test_origin_network_and_router() -> None:
    origin = parse_origin(["10.0.0.5"], ["net-a"], [])
    assert (origin.network_id, origin.router_id, origin.place()) == ("net-a", None, "network net-a")
    origin = parse_origin(["::ffff:10.0.0.5"], [], ["r-1"])
    assert origin.place() == "router r-1"
    assert origin.forwarded_for == "::ffff:10.0.0.5"  # forwarded as received


@pytest.mark.parametrize(
    ("xff", "networks", "routers", "message"),
    [
        (["10.0.0.5"], ["n"], ["r"], "Both network n and router r defined."),
        (["10.0.0.5"], [], [], "is required"),
        ([], ["n"], [], "X-Forwarded-For header is missing."),
        (["10.0.0.5", "10.0.0.6"], ["n"], [], "X-Forwarded-For given 2 times"),
        (["10.0.0.5"], ["n", "m"], [], "X-Neutron-Network-ID given 2 times"),
        (["10.0.0.5"], ["../admin"], [], "not a valid id"),
        (["10.0.0.5"], [], ["r?x=1"], "not a valid id"),
        (["10.0.0.5"], [""], [], "not a valid id"),
    ],
)
def test_bad_origin(xff: list[str], networks: list[str], routers: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("?", r"\?")):
        parse_origin(xff, networks, routers)


def test_ovn_network_id_names_the_network() -> None:
    origin = parse_origin(["10.0.0.5"], [], [], ["net-o"])
    assert (origin.network_id, origin.router_id, origin.place()) == ("net-o", None, "network net-o")
    assert origin.source == Source(ip_address="10.0.0.5")
    link_local = parse_origin(["fe80::f816:3eff:fe12:3456"], [], [], [" net-o "])
    assert link_local.network_id == "net-o"
    assert link_local.source == Source(mac_address="fa:16:3e:12:34:56")


@pytest.mark.parametrize(
    ("xff", "networks", "routers", "ovn", "message"),
    [
        # OVN's haproxy adds its header beside one the guest sent: two copies, never a guess.
        (["10.0.0.5"], [], [], ["net-b", "net-a"], "X-OVN-Network-ID given 2 times"),
        (["10.0.0.5"], [], [], ["net-a", "net-a"], "X-OVN-Network-ID given 2 times"),
        # ... and appends X-Forwarded-For to the guest's own.
        (["10.0.0.9", "10.0.0.5"], [], [], ["net-a"], "X-Forwarded-For given 2 times"),
        # ... and removes no X-Neutron-* header.
        (
            ["10.0.0.5"],
            ["net-b"],
            [],
            ["net-a"],
            "X-OVN-Network-ID and X-Neutron-Network-ID both given",
        ),
        (
            ["10.0.0.5"],
            [],
            ["r-1"],
            ["net-a"],
            "X-OVN-Network-ID and X-Neutron-Router-ID both given",
        ),
        (["10.0.0.5"], ["../x"], [], ["net-a"], "X-OVN-Network-ID and X-Neutron-Network-ID"),
        (["10.0.0.5"], ["net-a"], [], ["net-a"], "X-OVN-Network-ID and X-Neutron-Network-ID"),
        (["10.0.0.5"], [], [], [""], "X-OVN-Network-ID is not a valid id"),
        (["10.0.0.5"], [], [], ["net/../a"], "X-OVN-Network-ID is not a valid id"),
        ([], [], [], ["net-a"], "X-Forwarded-For header is missing."),
        (["10.0.0.5, 10.0.0.6"], [], [], ["net-a"], "must hold one address"),
        (["10.0.0.5"], [], [], [], "X-Neutron-Router-ID or X-OVN-Network-ID header is required"),
    ],
)
def test_bad_ovn_origin(
    xff: list[str], networks: list[str], routers: list[str], ovn: list[str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_origin(xff, networks, routers, ovn)


def request_with(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request(b"GET", b"/", "1.1", headers, b"", False)


def test_proxy_headers_as_ovn_haproxy_sends_them() -> None:
    # haproxy 2.6 (Debian 12) writes header names in lower case, its own after the guest's.
    request = request_with(
        [
            (b"host", b"169.254.169.254"),
            (b"x-ovn-network-id", b"net-b"),  # the guest's
            (b"x-forwarded-for", b"10.0.0.9"),  # the guest's
            (b"x-ovn-network-id", b"net-a"),
            (b"x-forwarded-for", b"10.0.0.5"),
            (b"connection", b"close"),
        ]
    )
    assert proxy_headers(request) == (["10.0.0.9", "10.0.0.5"], [], [], ["net-b", "net-a"])
    mixed = request_with([(b"X-OVN-NETWORK-ID", b"n"), (b"X-Neutron-Router-Id", b"r")])
    assert proxy_headers(mixed) == ([], [], ["r"], ["n"])
