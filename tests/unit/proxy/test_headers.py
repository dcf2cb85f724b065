"""Header rewriting between guest, proxy and agent."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastack import identity
from metastack.proxy.headers import (
    downstream_headers,
    format_peer,
    is_forbidden,
    upstream_headers,
)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("::FFFF:a00:5", "10.0.0.5"),
        ("fe80::f816:3eff:fe12:3456%eth0", "fe80::f816:3eff:fe12:3456"),
        ("FE80:0:0::A9FE:A9FE%3", "fe80::a9fe:a9fe"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_format_peer(peer: str, expected: str) -> None:
    assert format_peer(peer) == expected


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))


@st.composite
def forbidden_names(draw: st.DrawFn) -> bytes:
    base = draw(
        st.sampled_from(
            [
                *identity.GUEST_FORBIDDEN_PREFIXES,
                identity.NETWORK_ID,
                identity.ROUTER_ID,
                identity.INSTANCE_ID_SIGNATURE,
                identity.OVN_NETWORK_ID,
            ]
        )
    )
    suffix = draw(st.text(alphabet="abcxyz-ID", max_size=6))
    return _random_case(draw, base + suffix).encode()


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
ordinary = token.map(lambda t: ("x-custom-" + t).encode()) | st.sampled_from(
    [b"Accept", b"User-Agent", b"Host", b"Metadata-Flavor", b"X-aws-ec2-metadata-token"]
)
values = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
peers = (
    st.ip_addresses().map(str)
    | st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}")
    | st.integers(0, 2**64 - 1).map(lambda i: f"{ipaddress.IPv6Address((0xFE80 << 112) | i)}%eth0")
)


@given(
    headers=st.lists(st.tuples(forbidden_names() | ordinary, values), max_size=30),
    peer=peers,
    kind=st.sampled_from(["network", "router"]),
    ident=token,
)
def test_no_forbidden_header_survives(
    headers: list[tuple[bytes, bytes]], peer: str, kind: str, ident: str
) -> None:
    out = upstream_headers(headers, peer, kind, ident)  # type: ignore[arg-type]
    ours = out[-2:]
    assert not any(is_forbidden(name) for name, _ in out[:-2])
    xff = [v for n, v in out if n.lower() == b"x-forwarded-for"]
    assert xff == [format_peer(peer).encode()]
    assert ipaddress.ip_address(xff[0].decode()).compressed == xff[0].decode()
    own = identity.NETWORK_ID if kind == "network" else identity.ROUTER_ID
    other = identity.ROUTER_ID if kind == "network" else identity.NETWORK_ID
    assert [v for n, v in out if n.lower() == own.lower().encode()] == [ident.encode()]
    assert not [n for n, _ in out if n.lower() == other.lower().encode()]
    assert ours[0][0] == b"X-Forwarded-For"
    assert out[:-2] == [h for h in headers if not is_forbidden(h[0])]


def test_ordinary_headers_kept_hop_by_hop_dropped() -> None:
    guest = [
        (b"Host", b"169.254.169.254"),
        (b"Accept", b"*/*"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
        (b"Expect", b"100-continue"),
        (b"X-Forwarded-Host", b"kept"),
        (b"Forwarded-Anything", b"dropped"),
    ]
    out = upstream_headers(guest, "10.0.0.5", "network", "n1")
    assert out == [
        (b"Host", b"169.254.169.254"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-Host", b"kept"),
        (b"X-Forwarded-For", b"10.0.0.5"),
        (b"X-Neutron-Network-ID", b"n1"),
    ]


@pytest.mark.parametrize("kind", ["network", "router"])
def test_guest_ovn_headers_never_reach_the_agent(kind: str) -> None:
    # The agent takes X-OVN-Network-ID as a network id (OVN's haproxy): from a guest
    # behind our proxy it must never arrive, in any case, however often, however named.
    guest = [
        (b"X-OVN-Network-ID", b"net-b"),
        (b"x-ovn-network-id", b"net-b"),
        (b"X-Ovn-Network-Id", b"net-c"),
        (b"X-OVN-NETWORK-ID", b""),
        (b"x-ovn-router-id", b"r"),
        (b"X-OVN-", b"x"),
        (b"Accept", b"*/*"),
        (b"X-Ovnish", b"kept: not an X-OVN- header"),
    ]
    out = upstream_headers(guest, "10.0.0.5", kind, "n1")  # type: ignore[arg-type]
    assert not [name for name, _ in out if name.lower().startswith(b"x-ovn-")]
    own = b"X-Neutron-Network-ID" if kind == "network" else b"X-Neutron-Router-ID"
    assert out == [
        (b"Accept", b"*/*"),
        (b"X-Ovnish", b"kept: not an X-OVN- header"),
        (b"X-Forwarded-For", b"10.0.0.5"),
        (own, b"n1"),
    ]


def test_downstream_headers() -> None:
    agent = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"4"),
        (b"Connection", b"close"),
        (b"Keep-Alive", b"timeout=5"),
        (b"ETag", b'"x"'),
    ]
    assert downstream_headers(agent) == [(b"Content-Type", b"text/plain"), (b"ETag", b'"x"')]
