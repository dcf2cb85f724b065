"""Password endpoint abuse through the whole chain: the documented 4xx, and nothing written."""

from __future__ import annotations

import pytest

from e2e.world import World
from security.harness import Baseline, exchange, leaks, revision, secrets_of_others

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PASSWORD = "/openstack/latest/password"
HOST = b"Host: 169.254.169.254\r\n"


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    """A POST with a Content-Length framed body."""
    head = b"POST %s HTTP/1.1\r\n" % path.encode() + HOST + b"".join(extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(path: str, size: int, chunk: int = 65536) -> bytes:
    """A POST whose body of `size` bytes is sent chunked."""
    parts = [b"%x\r\n%s\r\n" % (n, b"p" * n) for n in _sizes(size, chunk)]
    head = b"POST %s HTTP/1.1\r\n" % path.encode() + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(parts) + b"0\r\n\r\n"


def _sizes(total: int, chunk: int) -> list[int]:
    return [min(chunk, total - start) for start in range(0, total, chunk)]


def passwords(world: World) -> dict[str, str]:
    """Every instance's stored password, read through the control API."""
    return {
        key: world.chain.call("GET", f"/v1/instances/{guest.uuid}/password")["password"]
        for key, guest in world.guests.items()
        if guest.instance is not None
    }


ABUSE = {
    "1021 bytes": (post(PASSWORD, b"p" * 1021), [400]),
    "1021 bytes chunked": (chunked(PASSWORD, 1021, 100), [400]),
    "2 MiB chunked": (chunked(PASSWORD, 2 << 20), [413]),
    "2 MiB announced": (
        b"POST %s HTTP/1.1\r\n" % PASSWORD.encode() + HOST + b"Content-Length: 2097152\r\n\r\n",
        [413],
    ),
    "2 MiB sent": (post(PASSWORD, b"p" * (2 << 20)), [413]),
    "1021 bytes after 100-continue": (
        post(PASSWORD, b"p" * 1021, b"Expect: 100-continue\r\n"),
        [100, 400],
    ),
    "not UTF-8": (post(PASSWORD, b"\xff\xfe\xfd"), [400]),
    "NUL inside": (post(PASSWORD, b"abc\x00def"), [400]),
    "CL and TE": (post(PASSWORD, b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"), [400]),
    "PUT": (post(PASSWORD, b"secret").replace(b"POST", b"PUT", 1), [400]),
    "PATCH": (post(PASSWORD, b"secret").replace(b"POST", b"PATCH", 1), [400]),
    "DELETE": (post(PASSWORD, b"").replace(b"POST", b"DELETE", 1), [400]),
    "old version": (post("/openstack/2012-08-10/password", b"secret"), [404]),
    "EC2 password": (post("/latest/meta-data/password", b"secret"), [404]),
    "EC2 root password": (post("/latest/password", b"secret"), [404]),
    "EC2 dated password": (post("/2009-04-04/password", b"secret"), [404]),
    "below the password": (post(PASSWORD + "/x", b"secret"), [404]),
    # A document of the EC2 tree answers a POST with itself and writes nothing.
    "EC2 document": (post("/latest/meta-data/instance-id", b"secret"), [200]),
}


def test_password_abuse_writes_nothing(world: World, intact: Baseline) -> None:
    guest = world.guests["b_dhcp"]
    secrets = secrets_of_others(world, guest.key)
    before = passwords(world)
    outcomes = exchange([(case, [raw]) for case, (raw, _) in ABUSE.items()], netns=guest.netns)
    for outcome in outcomes:
        assert outcome.statuses == ABUSE[outcome.case][1], outcome.describe()
        assert not leaks(outcome.raw, secrets), outcome.describe()
    assert outcomes[-1].answers[-1].body == guest.ec2_id.encode()
    # A guest without a port posts in vain.
    orphan = exchange(
        [("orphan", [post(PASSWORD, b"secret")])], netns=world.guests["a_orphan"].netns
    )
    assert orphan[0].statuses == [404], orphan[0].describe()
    assert revision(world) == intact.revision
    assert passwords(world) == before


def test_second_post_is_409_and_forged_headers_write_only_the_own(
    world: World, intact: Baseline
) -> None:
    guest, victim = world.guests["b_router"], world.guests["a_router"]
    assert not passwords(world)[guest.key]
    claim = (
        f"X-Instance-ID: {victim.uuid}\r\nX-Tenant-ID: {victim.project_id}\r\n"
        f"X-Forwarded-For: {victim.address}\r\nX-Neutron-Router-ID: {world.routers['a']}\r\n"
    ).encode()
    try:
        first = exchange([("first", [post(PASSWORD, b"c2VjcmV0", claim)])], netns=guest.netns)
        assert first[0].statuses == [200], first[0].describe()
        assert revision(world) == intact.revision + 1  # the one write, of the guest's own
        after_first = passwords(world)
        assert after_first[guest.key] == "c2VjcmV0"
        assert not after_first[victim.key]
        # Again, and several at once: 409 each time, nothing more written.
        again = [(f"again {n}", [post(PASSWORD, b"b3RoZXI=", claim)]) for n in range(6)]
        for outcome in exchange(again, netns=guest.netns):
            assert outcome.statuses == [409], outcome.describe()
        assert revision(world) == intact.revision + 1
        assert passwords(world) == after_first
    finally:
        if passwords(world)[guest.key]:
            world.chain.call("DELETE", f"/v1/instances/{guest.uuid}/password")
