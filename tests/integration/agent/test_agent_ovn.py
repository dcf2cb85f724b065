"""Requests as networking-ovn's haproxy sends them, over the agent's unix socket.

OVN's haproxy (docs/wire-contracts.md#ovn, docs/wire-contracts.md#upstream-haproxy) runs
`option forwardfor`, `option http-server-close` and `http-request add-header
X-OVN-Network-ID <network>`: haproxy 2.6 writes header names
in lower case, keeps whatever identity headers the guest sent, and adds its own after
them. The request heads below are the ones Debian 12's haproxy sent with that config
(captured on a unix socket), with the guest's forged headers where a test needs them.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from integration.agent.agent_fakes import SECRET, FakeControl, FakeMetadata
from metastack import identity
from metastack.agent.server import RunningAgent

CONTRACT = {"x-forwarded-for", "x-instance-id", "x-tenant-id", "x-instance-id-signature"}


def haproxy_request(
    path: str, network: str, source: str, guest_headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """A request head as OVN's haproxy forwards it: the guest's headers first, then its own."""
    lines = [
        f"GET {path} HTTP/1.1",
        "host: 169.254.169.254",
        "user-agent: Cloud-Init/23.1.2",
        "accept: */*",
        *(f"{name}: {value}" for name, value in guest_headers),
        f"x-ovn-network-id: {network}",
        f"x-forwarded-for: {source}",
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(agent: RunningAgent, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on the agent's socket; (status, headers, body) of its one answer."""
    reader, writer = await asyncio.open_unix_connection(agent.path)
    try:
        writer.write(raw)
        data = await asyncio.wait_for(reader.read(), 5)  # `connection: close`: read to EOF
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


async def test_overlapping_addresses_told_apart_by_the_ovn_network(
    agent: RunningAgent, metadata: FakeMetadata, control: FakeControl
) -> None:
    # 10.0.0.5 is inst-a on net-a and inst-b on net-b (the fixture's ports).
    for network, instance, project in (
        ("net-a", "inst-a", "proj-a"),
        ("net-b", "inst-b", "proj-b"),
    ):
        raw = haproxy_request("/openstack/latest/meta_data.json", network, "10.0.0.5")
        status, _, body = await exchange(agent, raw)
        assert status == 200, body
        answer = json.loads(body)
        assert (answer["instance"], answer["tenant"]) == (instance, project)
        assert answer["path"] == "/openstack/latest/meta_data.json"
        seen = metadata.seen[-1]
        assert seen.headers["X-Instance-ID-Signature"] == identity.sign_instance_id(
            SECRET, instance
        )
        assert seen.headers["X-Forwarded-For"] == "10.0.0.5"
        names = {name.lower() for name in seen.headers}
        assert names >= CONTRACT
        assert "x-ovn-network-id" not in names
        lookup = [url for url in control.lookups if url.startswith("/v1/ports")][-1]
        assert f"network_id={network}&ip_address=10.0.0.5" in lookup


async def test_ovn_link_local_guest_is_found_by_its_mac(agent: RunningAgent) -> None:
    raw = haproxy_request("/latest/meta-data/", "net-c", "fe80::f816:3eff:fe12:3456")
    status, _, body = await exchange(agent, raw)
    assert status == 200, body
    assert json.loads(body)["instance"] == "inst-c"


async def test_unknown_guest_on_an_ovn_network_is_404(agent: RunningAgent) -> None:
    status, _, body = await exchange(agent, haproxy_request("/", "net-b", "10.0.0.9"))
    assert status == 404
    # neutron's agent's page, as the agent writes its own errors.
    assert b"<h1>404 Not Found</h1>" in body
    assert b"  Instance was not found on network net-b.<br /><br />" in body


@pytest.mark.parametrize(
    ("guest_headers", "message"),
    [
        # The guest's own X-OVN-Network-ID is kept by haproxy, which adds the real one.
        ((("X-OVN-Network-ID", "net-b"),), "X-OVN-Network-ID given 2 times"),
        ((("x-ovn-network-id", "net-a"),), "X-OVN-Network-ID given 2 times"),
        # haproxy appends X-Forwarded-For: the guest's copy stays in front of it.
        ((("X-Forwarded-For", "10.0.0.5"),), "X-Forwarded-For given 2 times"),
        # ... and removes no X-Neutron-* header.
        (
            (("X-Neutron-Network-ID", "net-b"),),
            "X-OVN-Network-ID and X-Neutron-Network-ID both given",
        ),
        (
            (("x-neutron-router-id", "router-1"),),
            "X-OVN-Network-ID and X-Neutron-Router-ID both given",
        ),
    ],
)
async def test_guest_copies_of_identity_headers_are_400(
    agent: RunningAgent,
    metadata: FakeMetadata,
    control: FakeControl,
    guest_headers: tuple[tuple[str, str], ...],
    message: str,
) -> None:
    lookups, forwarded = len(control.lookups), len(metadata.seen)
    # The guest is 10.0.0.9 on net-a (no instance); it claims inst-b's network or address.
    raw = haproxy_request("/openstack/latest/meta_data.json", "net-a", "10.0.0.9", guest_headers)
    status, headers, body = await exchange(agent, raw)
    assert status == 400
    assert message in body.decode()
    assert headers["content-type"].startswith("text/plain")
    # Refused, not guessed: nothing was looked up, nothing reached the metadata API.
    assert (len(control.lookups), len(metadata.seen)) == (lookups, forwarded)
