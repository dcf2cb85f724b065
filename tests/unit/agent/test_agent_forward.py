"""Upstream headers, relayed headers and the failover decision (pure)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from metastack import identity
from metastack.agent.cache import Identity
from metastack.agent.forward import build_upstream_headers, may_fail_over, relayed_headers


def test_exactly_the_contract_headers_and_identity_encoding() -> None:
    headers = build_upstream_headers("::ffff:10.0.0.5", Identity("inst-a", "proj-a"), "k")
    assert headers == {
        "X-Forwarded-For": "::ffff:10.0.0.5",
        "X-Instance-ID": "inst-a",
        "X-Tenant-ID": "proj-a",
        "X-Instance-ID-Signature": identity.sign_instance_id("k", "inst-a"),
        "Accept-Encoding": "identity",
    }
    assert identity.verify_instance_id("k", "inst-a", headers["X-Instance-ID-Signature"])


def test_relayed_headers_drop_hop_by_hop_only() -> None:
    relayed = relayed_headers(
        {
            "Content-Type": "text/plain",
            "Content-Encoding": "gzip",
            "ETag": '"1"',
            "Connection": "keep-alive",
            "Transfer-Encoding": "chunked",
            "Content-Length": "3",
        }
    )
    assert dict(relayed) == {
        "Content-Type": "text/plain",
        "Content-Encoding": "gzip",
        "ETag": '"1"',
    }


KEY = ConnectionKey("h", 1, False, True, None, None, None)


@pytest.mark.parametrize(
    ("method", "exc", "expected"),
    [
        ("POST", aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), True),
        ("GET", aiohttp.ConnectionTimeoutError("connect"), True),
        ("GET", aiohttp.ServerDisconnectedError(), True),
        ("POST", aiohttp.ServerDisconnectedError(), False),  # may have been applied already
        ("GET", aiohttp.SocketTimeoutError("read"), False),  # slow, not down
        ("GET", TimeoutError(), False),
    ],
)
def test_failover_only_when_the_request_cannot_have_been_served(
    method: str, exc: BaseException, expected: bool
) -> None:
    assert may_fail_over(method, exc) is expected
