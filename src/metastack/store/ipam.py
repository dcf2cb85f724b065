"""Pure helpers for new objects: free IP allocation, MAC and reservation ids, nova's hostnames."""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from collections.abc import Collection

from metastack.errors import Conflict

MAC_PREFIX = "fa:16:3e"  # OpenStack's OUI for generated port MACs
SLAAC_MODES = ("slaac", "dhcpv6-stateless")


def generate_mac() -> str:
    """A random `fa:16:3e:xx:xx:xx` MAC, like neutron's default base_mac."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def generate_reservation_id() -> str:
    """A nova-style reservation id `r-xxxxxxxx`."""
    alphabet = string.ascii_lowercase + string.digits
    return "r-" + "".join(secrets.choice(alphabet) for _ in range(8))


def eui64_address(cidr: str, mac: str) -> str:
    """The SLAAC address of `mac` in IPv6 prefix `cidr` (modified EUI-64)."""
    network = ipaddress.IPv6Network(cidr)
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    interface_id = bytes([*octets[:3], 0xFF, 0xFE, *octets[3:]])
    return (network[0] + int.from_bytes(interface_id, "big")).compressed


def next_free_address(cidr: str, used: Collection[str], gateway: str | None) -> str:
    """The lowest host of `cidr` that is neither `used` nor the gateway; Conflict if none."""
    network = ipaddress.ip_network(cidr)
    taken = set(used) | ({gateway} if gateway else set())
    for host in network.hosts():  # ends after at most len(taken) + 1 steps unless full
        if host.compressed not in taken:
            return host.compressed
    raise Conflict(f"fixed_ips: no free IP address left in subnet {cidr}")


def in_subnet(address: str, cidr: str) -> bool:
    """Whether `address` lies in `cidr` (same IP version)."""
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(cidr)
    return ip.version == network.version and ip in network


def is_usable_host(address: str, cidr: str) -> bool:
    """False for an IPv4 subnet's network and broadcast addresses (when the prefix has them)."""
    network = ipaddress.ip_network(cidr)
    ip = ipaddress.ip_address(address)
    if network.version == 4 and network.prefixlen < 31:
        return ip not in (network.network_address, network.broadcast_address)
    return True


def sanitize_hostname(name: str, default: str) -> str:
    """nova's hostname from a display name: latin-1 only, ' _.' -> '-', other invalid dropped."""
    hostname = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    hostname = re.sub(r"[ _\.]", "-", hostname)
    hostname = re.sub(r"[^\w.-]+", "", hostname)
    hostname = hostname.lower().strip(".-")
    return hostname or default[:63]
