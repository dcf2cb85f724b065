"""Upstream headers, relayed headers and the failover decision (pure)."""

from __future__ import annotations

import pytest

from metastack import identity
from metastack.agent.cache import Identity
from metastack.agent.forward import (
    Signer,
    build_upstream_headers,
    may_fail_over,
    relayed_headers,
)
from metastack.errors import UpstreamUnavailable
from metastack.http11 import ConnectFailed, NotSent, UpstreamBroken, UpstreamTimeout


def test_exactly_the_contract_headers_and_identity_encoding() -> None:
    listed = build_upstream_headers("::ffff:10.0.0.5", Identity("inst-a", "proj-a"), "k")
    headers = {name.decode(): value.decode() for name, value in listed}
    assert len(listed) == len(headers)
    assert headers == {
        "X-Forwarded-For": "::ffff:10.0.0.5",
        "X-Instance-ID": "inst-a",
        "X-Tenant-ID": "proj-a",
        "X-Instance-ID-Signature": identity.sign_instance_id("k", "inst-a"),
        "Accept-Encoding": "identity",
        "Accept": "*/*",
    }
    assert identity.verify_instance_id("k", "inst-a", headers["X-Instance-ID-Signature"])


def test_signer_block_is_the_contract_headers_encoded() -> None:
    signer = Signer("k")
    for xff, who in [("10.0.0.5", Identity("i-1", "p")), ("10.0.0.6", Identity("i-1", "p"))] * 2:
        expected = b"".join(b"%s: %s\r\n" % h for h in build_upstream_headers(xff, who, "k"))
        assert signer.header_block(xff, who) == expected


def test_a_line_break_in_an_id_never_reaches_the_api() -> None:
    with pytest.raises(UpstreamUnavailable):
        build_upstream_headers("10.0.0.5", Identity("inst\r\nX-Evil: 1", "proj-a"), "k")


def test_relayed_headers_drop_hop_by_hop_only() -> None:
    received = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Encoding", b"gzip"),
        (b"ETag", b'"1"'),
        (b"Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
    ]
    assert relayed_headers(received) == received[:3]
    # A HEAD reply has no body to count: the API's length is the one to pass on.
    assert relayed_headers(received, keep_length=True) == [*received[:3], received[5]]


@pytest.mark.parametrize(
    ("method", "exc", "expected"),
    [
        (b"POST", ConnectFailed("refused"), True),
        (b"POST", NotSent("waited for a turn, or never acknowledged by the peer"), True),
        (b"GET", ConnectFailed("connect timeout"), True),
        (b"GET", UpstreamBroken("closed"), True),
        (b"POST", UpstreamBroken("closed"), False),  # may have been applied already
        (b"GET", UpstreamTimeout("read"), False),  # slow, not down
        (b"GET", TimeoutError(), False),
    ],
)
def test_failover_only_when_the_request_cannot_have_been_served(
    method: bytes, exc: BaseException, expected: bool
) -> None:
    assert may_fail_over(method, exc) is expected
