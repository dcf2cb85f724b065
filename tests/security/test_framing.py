"""Smuggling and framing games from a guest: a clean 4xx, a closed connection, nothing smuggled."""

from __future__ import annotations

import json

import pytest

from e2e.world import World
from metastack import identity
from security.harness import (
    HEADER_TIMEOUT,
    MD,
    Baseline,
    exchange,
    leaks,
    revision,
    secrets_of_others,
)

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

GET = b"GET " + MD.encode() + b" HTTP/1.1\r\n"
POST = b"POST " + MD.encode() + b" HTTP/1.1\r\n"
HOST = b"Host: 169.254.169.254\r\n"
OWN = 200  # the guest's own document
TIMEOUT = 408  # incomplete: answered when the proxy's head deadline passes


def smuggled(world: World) -> bytes:
    """A complete request claiming another instance, to hide inside a first one."""
    victim = world.guests["b_dhcp"]
    signature = identity.sign_instance_id(world.chain.secret, victim.uuid)
    forged = (
        f"X-Instance-ID: {victim.uuid}\r\nX-Instance-ID-Signature: {signature}\r\n"
        f"X-Tenant-ID: {victim.project_id}\r\nX-Neutron-Network-ID: {victim.network_id}\r\n"
        f"X-Forwarded-For: {victim.address}\r\n\r\n"
    )
    return GET + HOST + forged.encode()


def framing_cases(world: World) -> dict[str, tuple[bytes, list[int]]]:
    """case -> (bytes sent, statuses expected in order)."""
    inner = smuggled(world)
    size = b"%x" % len(inner)
    return {
        "CL then TE": (
            POST
            + HOST
            + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            + inner,
            [400],
        ),
        "TE then CL": (
            POST
            + HOST
            + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
            + inner,
            [400],
        ),
        "TE identity and CL": (
            POST + HOST + b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc" + inner,
            [400],
        ),
        "two differing CL": (
            POST + HOST + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner,
            [400],
        ),
        "two equal CL": (POST + HOST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", [400]),
        "CL list": (POST + HOST + b"Content-Length: 3, 3\r\n\r\nabc", [400]),
        "CL signed": (POST + HOST + b"Content-Length: +3\r\n\r\nabc", [400]),
        "CL negative": (POST + HOST + b"Content-Length: -1\r\n\r\n" + inner, [400]),
        "CL hex": (POST + HOST + b"Content-Length: 0x3\r\n\r\nabc", [400]),
        "CL huge": (POST + HOST + b"Content-Length: 99999999999999999999999\r\n\r\n", [400]),
        "TE chunked, gzip": (
            POST + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            [400],
        ),
        "TE gzip only": (POST + HOST + b"Transfer-Encoding: gzip\r\n\r\n" + inner, [400]),
        "TE space before colon": (
            POST + HOST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + inner,
            [400],
        ),
        "TE folded": (
            POST + HOST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + inner,
            [400],
        ),
        "chunk size not hex": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + inner,
            [400],
        ),
        "chunk size overflow": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n",
            [400],
        ),
        "chunk size negative": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
            [400],
        ),
        "chunk without CRLF": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
            [400],
        ),
        "chunk size LF only": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
            [400],
        ),
        # A well-framed body that happens to hold a request is only a body.
        "request inside a chunk": (
            POST
            + HOST
            + b"Transfer-Encoding: chunked\r\n\r\n%s\r\n%s\r\n0\r\n\r\n" % (size, inner),
            [OWN],
        ),
        "request inside a GET body": (
            GET + HOST + b"Content-Length: %d\r\n\r\n" % len(inner) + inner,
            [OWN],
        ),
        "bare LF line ends": (GET.replace(b"\r\n", b"\n") + b"Host: x\n\n", [400]),
        "LF inside the head": (GET + b"Host: x\nX-Forwarded-For: 10.77.0.6\r\n\r\n", [400]),
        "CR only line ends": (GET.replace(b"\r\n", b"\r") + b"Host: x\r\r", [400]),
        "HTTP/0.9": (b"GET " + MD.encode() + b"\r\n\r\n", [400]),
        "HTTP/0.9 explicit": (b"GET " + MD.encode() + b" HTTP/0.9\r\n\r\n", [400]),
        "HTTP/2.0 line": (b"GET " + MD.encode() + b" HTTP/2.0\r\n" + HOST + b"\r\n", [400]),
        "HTTP/1.2": (b"GET " + MD.encode() + b" HTTP/1.2\r\n" + HOST + b"\r\n", [400]),
        "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [400]),
        "TLS hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), [400]),
        "NUL bytes": (bytes(64), [400]),
        "SSH banner": (b"SSH-2.0-OpenSSH_9.2p1\r\n", [400]),
        "lower-case method": (b"get " + MD.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n", [400]),
        "unknown method": (b"BREW " + MD.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n", [400]),
        # llhttp skips the extra space: an ordinary request.
        "two spaces": (b"GET  " + MD.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n", [OWN]),
        "header without colon": (GET + HOST + b"X-Forwarded-For 10.77.0.6\r\n\r\n", [400]),
        "NUL in a header": (GET + HOST + b"X-Note: a\x00b\r\n\r\n", [400]),
        "space-led first header": (
            GET + b" X-Forwarded-For: 10.77.0.6\r\n" + HOST + b"\r\n",
            [400],
        ),
        "absolute form, other host": (
            b"GET http://other" + MD.encode() + b" HTTP/1.1\r\n\r\n",
            [OWN],
        ),
        "CONNECT": (b"CONNECT 10.77.0.6:80 HTTP/1.1\r\nHost: 10.77.0.6:80\r\n\r\n" + inner, [405]),
        "CONNECT metadata": (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n" + inner, [405]),
        # The request is answered; what follows an upgrade is never read.
        "Upgrade h2c": (GET + HOST + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + inner, [OWN]),
        "pipelined forgery": (GET + HOST + b"\r\n" + inner + GET + HOST + b"\r\n", [OWN] * 3),
        "pipelined after a bad one": (GET + b"Host: x\nBad\r\n\r\n" + inner, [400]),
        "truncated head": (GET + HOST, [TIMEOUT]),
        "truncated body": (POST + HOST + b"Content-Length: 10\r\n\r\nabc", [TIMEOUT]),
        "truncated chunk": (
            POST + HOST + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
            [TIMEOUT],
        ),
    }


@pytest.mark.parametrize("key", ["a_dhcp", "a_router"])
def test_framing_and_smuggling(world: World, intact: Baseline, key: str) -> None:
    guest = world.guests[key]
    cases = framing_cases(world)
    outcomes = exchange([(case, [raw]) for case, (raw, _) in cases.items()], netns=guest.netns)
    secrets = secrets_of_others(world, key)
    for outcome in outcomes:
        expected = cases[outcome.case][1]
        assert outcome.statuses == expected, outcome.describe()
        assert not leaks(outcome.raw, secrets), outcome.describe()
        assert not outcome.leftover, outcome.describe()
        for answer in outcome.answers:
            if answer.status == OWN:
                assert json.loads(answer.body)["uuid"] == guest.uuid, outcome.describe()
            else:  # an error ends the connection: nothing after it is read
                assert answer.header("connection") == "close", outcome.describe()
                assert outcome.closed, outcome.describe()
            if answer.status == TIMEOUT:
                assert outcome.seconds < HEADER_TIMEOUT + 1.0, outcome.describe()
    assert revision(world) == intact.revision
