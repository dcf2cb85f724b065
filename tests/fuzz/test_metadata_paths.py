"""Hostile paths and methods against the real metadata app: no 500, no other tenant's data."""

from __future__ import annotations

import socket
import string
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metastack import identity

from .conftest import SECRET, LiveApi, Tenants

ALLOWED = {200, 400, 403, 404, 409}
SEGMENTS = [
    "latest", "meta-data", "user-data", "openstack", "ec2", "2009-04-04", "2013-04-04",
    "2018-08-27", "meta_data.json", "user_data", "network_data.json", "vendor_data2.json",
    "password", "public-keys", "0", "openssh-key", "placement", "hostname", "content", "0000",
    "..", ".", "", "%2e%2e", "%2E%2e", ".%2e", "%2e", "%2f", "%2F", "..%2f..", "%5c", "\\",
    ";a=b", "meta-data;x", "%3b", "%00", "%ff", "%c3%28", "%e2%82", "%", "%zz", "%%",
    "~", "*", "?", "#", "%3f", "%23", "%20", "+",
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]


def raw_request(
    port: int, method: str, target: bytes, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, bytes]:
    """Send one request byte for byte; answer (status, whole response)."""
    lines = [f"{method} ".encode() + target + b" HTTP/1.1", b"Host: 169.254.169.254"]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    lines += [b"Connection: close", f"Content-Length: {len(body)}".encode()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line = response.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), response


KNOWN = [
    "/latest/meta-data/hostname",
    "/latest/meta-data/public-keys/0/openssh-key",
    "/latest/user-data",
    "/2009-04-04/meta-data/placement/availability-zone",
    "/openstack/latest/meta_data.json",
    "/openstack/latest/user_data",
    "/openstack/2013-04-04/password",
    "/openstack/latest/network_data.json",
    "/openstack/latest/vendor_data2.json",
]
TRICKS = ["..", ".", "", "%2e%2e", "%2E%2E", "%2f", ";x=1", "%00", "%ff", "%c3%28", "//"]


@st.composite
def mutated_known(draw: st.DrawFn) -> bytes:
    """A real document path with traversal segments, empty segments or escapes spliced in."""
    parts = draw(st.sampled_from(KNOWN)).split("/")
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(1, len(parts)))
        trick = draw(st.sampled_from(TRICKS))
        if draw(st.booleans()):
            parts.insert(where, trick)
        else:
            parts[where - 1] += trick
    return "/".join(parts).encode("ascii")


@st.composite
def built(draw: st.DrawFn, tenants: Tenants) -> bytes:
    """A request target built from tree names, traversal tricks and broken escapes."""
    vocabulary = st.sampled_from([*SEGMENTS, tenants.other_uuid, tenants.caller_uuid])
    printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)
    control = st.text(st.characters(codec="ascii", exclude_characters="\r\n \t"), max_size=4)
    parts = draw(st.lists(vocabulary | printable | control, max_size=10))
    separator = draw(st.sampled_from(["/", "/", "/", "//", "/./", "/../"]))
    path = draw(st.sampled_from(["/", "/", "/", "/", "//", ""])) + separator.join(parts)
    if draw(st.booleans()):
        path += draw(st.sampled_from(["/", "?", "?x=1", "?a=%ff", ";p", "#frag"]))
    if draw(st.integers(0, 19)) == 0:  # now and then far past any sane length
        path += "/" + "a" * draw(st.integers(1000, 20000))
    return path.encode("ascii")


def targets(tenants: Tenants) -> st.SearchStrategy[bytes]:
    """Half built from pieces, half real paths spliced with tricks."""
    return built(tenants) | mutated_known()


@st.composite
def identities(draw: st.DrawFn, tenants: Tenants, signed: bool) -> list[tuple[str, str]]:
    """The caller's own identity, sometimes with forged or duplicated identity headers added."""
    headers: list[tuple[str, str]] = []
    if signed:
        own = [
            (identity.INSTANCE_ID, tenants.caller_uuid),
            (identity.TENANT_ID, tenants.caller_project),
            (
                identity.INSTANCE_ID_SIGNATURE,
                identity.sign_instance_id(SECRET, tenants.caller_uuid),
            ),
        ]
        if draw(st.integers(0, 9)) == 0:  # now and then one of them is missing
            headers += draw(st.lists(st.sampled_from(own), unique=True, max_size=2))
        else:
            headers += own
    forged = [
        (identity.INSTANCE_ID, tenants.other_uuid),
        (identity.TENANT_ID, "victim-project"),
        (identity.INSTANCE_ID_SIGNATURE, "0" * 64),
        (identity.FORWARDED_FOR, "127.0.0.2"),
        ("Forwarded", "for=127.0.0.2"),
        ("x-instance-id", tenants.other_uuid),
    ]
    headers += draw(st.lists(st.sampled_from(forged), max_size=2))
    return draw(st.permutations(headers))


def test_hostile_paths(live_metadata_api: LiveApi, tenants: Tenants) -> None:
    """Raw requests (exact bytes on a socket) with traversal, escapes, forged identity headers."""
    signed = live_metadata_api.mode == "signed"
    methods = st.integers(0, 9).flatmap(
        lambda n: (
            st.text(string.ascii_uppercase, min_size=1, max_size=10)
            if n == 0
            else st.sampled_from(METHODS)
        )
    )
    seen: Counter[int] = Counter()

    @given(
        method=methods,
        target=targets(tenants),
        headers=identities(tenants, signed),
        body=st.binary(max_size=64),
    )
    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def probe(method: str, target: bytes, headers: list[tuple[str, str]], body: bytes) -> None:
        status, response = raw_request(live_metadata_api.port, method, target, headers, body)
        seen[status] += 1
        assert status in ALLOWED, (status, response[:300])
        sent = target + repr(headers).encode()
        for secret in tenants.other_secrets:
            if secret.encode() not in sent:  # an error page may echo what the guest sent
                assert secret.encode() not in response, (secret, target[:200], response[:300])

    probe()
    print(f"{live_metadata_api.mode}: statuses {dict(sorted(seen.items()))}")
    assert seen[200] and seen[404], seen  # real documents were reached, not only refusals
