"""Pure header rewriting between guest, proxy and agent."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Literal

from metastack import identity
from metastack.http11 import HOP_BY_HOP, Headers

IdentityKind = Literal["network", "router"]

FORBIDDEN = tuple(p.encode() for p in identity.GUEST_FORBIDDEN_PREFIXES)
_ID_HEADER = {
    "network": identity.NETWORK_ID.encode(),
    "router": identity.ROUTER_ID.encode(),
}
_XFF = identity.FORWARDED_FOR.encode()


@functools.lru_cache(maxsize=16384)
def format_peer(host: str) -> str:
    """The guest address as the agent expects it in X-Forwarded-For.

    IPv4-mapped IPv6 becomes dotted IPv4, a link-local `%scope` is dropped, and the
    address is written in its canonical (compressed, lower-case) form. Kept per address:
    a booting guest asks dozens of times from the same one.
    """
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_forbidden(name: bytes) -> bool:
    """True for a header a guest may never send (any letter case)."""
    return name.lower().startswith(FORBIDDEN)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased tokens of every Connection header (names it declares hop-by-hop)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_headers(
    guest: Iterable[tuple[bytes, bytes]], peer: str, kind: IdentityKind, ident: str
) -> Headers:
    """Guest headers minus identity and hop-by-hop ones, plus X-Forwarded-For and our id."""
    guest = list(guest)
    drop = HOP_BY_HOP | connection_tokens(guest)
    out: Headers = [
        (name, value)
        for name, value in guest
        if not is_forbidden(name) and name.lower() not in drop
    ]
    out.append((_XFF, format_peer(peer).encode()))
    out.append((_ID_HEADER[kind], ident.encode()))
    return out


def downstream_headers(upstream: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Agent response headers minus hop-by-hop and framing ones (recomputed by the proxy)."""
    upstream = list(upstream)
    drop = HOP_BY_HOP | connection_tokens(upstream)
    return [(name, value) for name, value in upstream if name.lower() not in drop]
