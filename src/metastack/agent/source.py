"""Who is asking: the proxy's headers parsed into a lookup key (pure).

The contract: docs/wire-contracts.md#headers-from-the-proxy.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from metastack import identity
from metastack.errors import InvalidInput
from metastack.identity import mac_from_eui64

# Network and router ids end up in control API URLs; anything else is refused up front.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True, slots=True)
class Source:
    """The guest as the lookup sees it: by fixed IP, or by MAC for IPv6 link-local."""

    ip_address: str | None = None
    mac_address: str | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """One request's identity input: the guest source and where the proxy saw it."""

    forwarded_for: str
    source: Source
    network_id: str | None
    router_id: str | None

    def place(self) -> str:
        """`network <id>` or `router <id>`, as in the upstream 404 message."""
        if self.network_id is not None:
            return f"network {self.network_id}"
        return f"router {self.router_id}"


def _single(name: str, values: Sequence[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput(f"{name} given {len(values)} times; exactly one is allowed.")
    return values[0].strip()


def _checked_id(name: str, value: str | None) -> str | None:
    if value is not None and not _ID.fullmatch(value):
        raise InvalidInput(f"{name} is not a valid id.")
    return value


def parse_origin(
    forwarded_for: Sequence[str],
    network_ids: Sequence[str],
    router_ids: Sequence[str],
    ovn_network_ids: Sequence[str] = (),
) -> Origin:
    """Validate the proxy's headers (each given as all its values); InvalidInput -> 400.

    X-OVN-Network-ID (networking-ovn's haproxy) names a network as X-Neutron-Network-ID
    does. That haproxy adds its header and appends X-Forwarded-For without removing what
    the guest sent, and removes no X-Neutron-* header: a second copy of either header, or
    X-OVN-Network-ID beside an X-Neutron-* id, may be the guest's, and is refused rather
    than guessed at.
    """
    network_id = _single(identity.NETWORK_ID, network_ids)
    router_id = _single(identity.ROUTER_ID, router_ids)
    ovn_network_id = _single(identity.OVN_NETWORK_ID, ovn_network_ids)
    if ovn_network_id is not None and (network_id is not None or router_id is not None):
        other = identity.NETWORK_ID if network_id is not None else identity.ROUTER_ID
        raise InvalidInput(
            f"{identity.OVN_NETWORK_ID} and {other} both given; exactly one is allowed."
        )
    network_id = _checked_id(identity.NETWORK_ID, network_id)
    router_id = _checked_id(identity.ROUTER_ID, router_id)
    if ovn_network_id is not None:
        network_id = _checked_id(identity.OVN_NETWORK_ID, ovn_network_id)
    if network_id is not None and router_id is not None:
        # A guest-injected id next to the proxy's one: never guess which is real (LP #1865036).
        raise InvalidInput(f"Both network {network_id} and router {router_id} defined.")
    if network_id is None and router_id is None:
        raise InvalidInput(
            f"One of {identity.NETWORK_ID}, {identity.ROUTER_ID} or {identity.OVN_NETWORK_ID}"
            " header is required."
        )
    value = _single(identity.FORWARDED_FOR, forwarded_for)
    if value is None:
        raise InvalidInput(f"{identity.FORWARDED_FOR} header is missing.")
    return Origin(value, parse_forwarded_for(value), network_id, router_id)


# A guest asks dozens of times per boot from the same address: parse each address once.
@functools.lru_cache(maxsize=8192)
def parse_forwarded_for(value: str) -> Source:
    """One address: IPv4-mapped IPv6 -> dotted IPv4; IPv6 link-local -> MAC (EUI-64)."""
    text = value.strip()
    if "," in text:
        raise InvalidInput(f"{identity.FORWARDED_FOR} must hold one address, got {value!r}.")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"{identity.FORWARDED_FOR} is not an IP address: {value!r}.") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return Source(ip_address=str(address.ipv4_mapped))
        if address.is_link_local:
            # A non-EUI-64 (privacy or random) interface id has no MAC: nothing can match.
            return Source(mac_address=mac_from_eui64(address))
        # Drop a zone id: fixed IPs are stored without one.
        return Source(ip_address=str(ipaddress.IPv6Address(int(address))))
    return Source(ip_address=str(address))
