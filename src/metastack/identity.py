"""The contract between proxy, agent and metadata API: header names and signing."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

FORWARDED_FOR = "X-Forwarded-For"
FORWARDED = "Forwarded"
NETWORK_ID = "X-Neutron-Network-ID"
ROUTER_ID = "X-Neutron-Router-ID"
# Stamped by networking-ovn's haproxy (ovnmeta-<network> namespaces): a network id too.
OVN_NETWORK_ID = "X-OVN-Network-ID"
INSTANCE_ID = "X-Instance-ID"
TENANT_ID = "X-Tenant-ID"
INSTANCE_ID_SIGNATURE = "X-Instance-ID-Signature"
# Set by the metadata API on a 404 when the signed instance does not hold the forwarded
# address (any more): the agent's lookup was stale, so it looks the address up again.
ADDRESS_MISMATCH = "X-Metastack-Address-Mismatch"

# Header name prefixes a guest may never set; the proxy strips every header
# whose lower-cased name starts with one of these (or equals one of them).
GUEST_FORBIDDEN_PREFIXES = (
    "x-forwarded-for",
    "forwarded",
    "x-instance-id",
    "x-tenant-id",
    "x-neutron-",
    "x-ovn-",
)


def sign_instance_id(secret: str, instance_id: str) -> str:
    """Lower-case hex HMAC-SHA256 of the instance id keyed with the shared secret."""
    # surrogateescape: header values decoded from arbitrary bytes still sign (and fail) cleanly
    key = secret.encode("utf-8", "surrogateescape")
    message = instance_id.encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_instance_id(secret: str, instance_id: str, signature: str) -> bool:
    """Constant-time check of a signature made by :func:`sign_instance_id`."""
    if not signature:
        return False
    return signature_matches(sign_instance_id(secret, instance_id), signature)


def signature_matches(expected: str, signature: str) -> bool:
    """Constant-time comparison of a presented signature with the expected one."""
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


def mac_from_eui64(address: ipaddress.IPv6Address) -> str | None:
    """The MAC behind a modified EUI-64 interface id (RFC 4291 appendix A), else None."""
    iid = address.packed[8:]
    if iid[3:5] != b"\xff\xfe":
        return None
    mac = bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:8]
    return ":".join(f"{byte:02x}" for byte in mac)
