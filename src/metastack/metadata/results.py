"""What a metadata lookup returns, and the options rendering depends on."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final

TEXT_PLAIN: Final = "text/plain; charset=UTF-8"
APPLICATION_JSON: Final = "application/json"
# nova's password handler returns a bare string, which WebOb serves with its default type.
TEXT_HTML: Final = "text/html; charset=UTF-8"

# JSON output never holds a raw NUL byte (json.dumps escapes control characters),
# so this marker cannot collide with anything user data renders to.
SEED_PLACEHOLDER: Final = b"\x00random_seed\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderOptions:
    """Deployment settings that change rendered documents (nova's `[api]` options)."""

    today: datetime.date  # UTC date; gates which versions `GET /openstack` lists
    dhcp_domain: str = "novalocal"
    vendordata_static: object | None = None  # parsed static vendordata JSON; None if unset
    static_vendordata_enabled: bool = True  # "StaticJSON" in vendordata_providers


@dataclass(frozen=True, slots=True)
class Document:
    """A rendered response body with its exact Content-Type header value."""

    content_type: str
    body: bytes
    needs_seed: bool = False  # body holds SEED_PLACEHOLDER once; see materialize()
    cacheable: bool = True  # False when the body depends on the request address

    def materialize(self, seed_b64: bytes) -> bytes:
        """The body to send: with `seed_b64` in place of the placeholder if it has one.

        `seed_b64` must be fresh per request (base64 of 512 random bytes), as nova
        regenerates `random_seed` on every request.
        """
        if not self.needs_seed:
            return self.body
        return self.body.replace(SEED_PLACEHOLDER, seed_b64, 1)


class Missing:
    """No document at this path: answer 404."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


@dataclass(frozen=True, slots=True)
class PasswordFile:
    """`/openstack/<v>/password`: the server handles GET and POST itself.

    The contract: docs/wire-contracts.md#password.
    """

    password: str  # the stored password, served by GET (may be empty)
    content_type: str = TEXT_HTML


@dataclass(frozen=True, slots=True)
class VendorData2:
    """`vendor_data2.json`: the server calls the dynamic targets, then render_vendor_data2."""

    static: object | None  # the static part, None when StaticJSON is disabled


Result = Document | Missing | PasswordFile | VendorData2
