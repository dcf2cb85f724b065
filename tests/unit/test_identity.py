"""The signing contract between agent and API (nova's HMAC-SHA256 of the instance id)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from metastack.identity import sign_instance_id, verify_instance_id


def test_signature_is_nova_compatible_hex() -> None:
    expected = hmac.new(b"secret", b"instance-uuid", hashlib.sha256).hexdigest()
    assert sign_instance_id("secret", "instance-uuid") == expected
    assert expected == expected.lower() and len(expected) == 64


@given(st.text(), st.text(min_size=1), st.text())
def test_only_the_right_signature_verifies(secret: str, instance_id: str, other: str) -> None:
    signature = sign_instance_id(secret, instance_id)
    assert verify_instance_id(secret, instance_id, signature)
    assert not verify_instance_id(secret, instance_id, "")
    if other != signature:
        assert not verify_instance_id(secret, instance_id, other)
    assert not verify_instance_id(secret + "x", instance_id, signature)


def test_undecodable_header_bytes_verify_false_not_crash() -> None:
    odd = b"\xff\xfe-id".decode("utf-8", "surrogateescape")
    assert not verify_instance_id("secret", odd, "\udcff" * 64)
    assert verify_instance_id("secret", odd, sign_instance_id("secret", odd))
