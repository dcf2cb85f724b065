"""Validated scalar types shared by the specs: uuids, project ids, IPs, CIDRs, MACs, base64."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo
from pydantic.json_schema import SkipJsonSchema

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PROJECT = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def canonical_uuid(value: str) -> str:
    """`value` as a lower-case hyphenated uuid; ValueError when it is not a uuid."""
    if len(value) > 45:
        raise ValueError("not a valid uuid")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("not a valid uuid") from None


def canonical_ip(value: str) -> str:
    """`value` as a compressed IPv4/IPv6 address; ValueError otherwise."""
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IP address") from None


def canonical_cidr(value: str) -> str:
    """`value` as a network prefix (host bits must be zero); ValueError otherwise."""
    try:
        return ipaddress.ip_network(value, strict=True).with_prefixlen
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR: {exc}") from None


def canonical_mac(value: str) -> str:
    """`value` as a lower-case unicast MAC `aa:bb:cc:dd:ee:ff`; ValueError otherwise."""
    mac = value.lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"{value!r} is not a valid MAC address")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise ValueError(f"{value!r} is a multicast or zero MAC address")
    return mac


def _project_id(value: str) -> str:
    if not _PROJECT.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '@', '-'")
    return value


def decode_user_data(value: str) -> bytes:
    """Decode base64 user data; line breaks and blanks are allowed, as nova allows them."""
    return base64.b64decode("".join(value.split()).encode("ascii"), validate=True)


def check_user_data(value: str, info: ValidationInfo) -> str:
    """Base64 user data no longer than the `max_user_data_bytes` validation context value."""
    context: dict[str, Any] = info.context if isinstance(info.context, dict) else {}
    limit = int(context.get("max_user_data_bytes", 65535))
    if len(value) > limit:
        raise ValueError(f"is {len(value)} bytes of base64, more than the limit of {limit}")
    try:
        decode_user_data(value)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("is not valid base64") from None
    return value


Uuid = Annotated[
    str, Field(max_length=45, json_schema_extra={"format": "uuid"}), AfterValidator(canonical_uuid)
]
ProjectId = Annotated[str, Field(pattern=_PROJECT.pattern), AfterValidator(_project_id)]
IpAddress = Annotated[str, Field(max_length=64), AfterValidator(canonical_ip)]
Cidr = Annotated[str, Field(max_length=64), AfterValidator(canonical_cidr)]
MacAddress = Annotated[
    str, Field(pattern=r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"), AfterValidator(canonical_mac)
]
Name = Annotated[str, StringConstraints(max_length=255)]
RequiredName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Short = Annotated[str, StringConstraints(max_length=255)]
DeviceName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
VifType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
UserData = Annotated[str, AfterValidator(check_user_data)]
Unset = SkipJsonSchema[None]  # a PATCH field left out; an explicit null is refused
