"""The agent over its unix socket: lookups, 400s, 404s, what reaches the metadata API."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable

import aiohttp
import pytest
from yarl import URL

from integration.agent.agent_fakes import SECRET, FakeControl, FakeMetadata, proxy_headers
from metastack import identity
from metastack.agent.config import AgentConfig
from metastack.agent.server import RunningAgent, running

CONTRACT = {"x-forwarded-for", "x-instance-id", "x-tenant-id", "x-instance-id-signature"}
# What aiohttp's client adds on its own, beside the chain's headers
# (docs/wire-contracts.md#request-to-the-metadata-api).
CLIENT_ADDED = {"host", "user-agent", "accept", "accept-encoding", "content-length"}


async def test_network_lookup_forwards_the_four_signed_headers(
    client: aiohttp.ClientSession, metadata: FakeMetadata
) -> None:
    headers = proxy_headers() | {"X-Instance-ID": "forged", "Accept": "text/html", "Cookie": "x"}
    async with client.get("/openstack/latest/meta_data.json", headers=headers) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["instance"] == "inst-a"
    assert answer["tenant"] == "proj-a"
    seen = metadata.seen[-1]
    names = {name.lower() for name in seen.headers}
    assert names >= CONTRACT
    assert names - CONTRACT <= CLIENT_ADDED
    assert seen.headers["X-Forwarded-For"] == "10.0.0.5"
    assert seen.headers["X-Instance-ID-Signature"] == identity.sign_instance_id(SECRET, "inst-a")
    assert seen.headers["Accept-Encoding"] == "identity"


async def test_same_ip_on_two_networks_gives_two_instances(client: aiohttp.ClientSession) -> None:
    for network, instance in (("net-a", "inst-a"), ("net-b", "inst-b")):
        async with client.get("/latest/meta-data/", headers=proxy_headers(network=network)) as r:
            assert (await r.json())["instance"] == instance


async def test_router_lookup_searches_the_router_networks(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    headers = proxy_headers(xff="10.0.1.7", network=None, router="router-1")
    async with client.get("/latest/meta-data/instance-id", headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["instance"] == "inst-c"
    port_lookup = [url for url in control.lookups if url.startswith("/v1/ports")][-1]
    assert "network_id=net-a&network_id=net-c&ip_address=10.0.1.7" in port_lookup


async def test_method_path_query_and_body_are_forwarded(
    client: aiohttp.ClientSession, metadata: FakeMetadata
) -> None:
    path = URL("/openstack/2013-04-04/password?a=1&b=%2F", encoded=True)  # sent as written
    async with client.post(path, data=b"secret-password", headers=proxy_headers()) as response:
        answer = await response.json()
    assert answer["method"] == "POST"
    assert answer["path"] == "/openstack/2013-04-04/password?a=1&b=%2F"
    assert metadata.seen[-1].body == b"secret-password"
    assert "Content-Type" not in metadata.seen[-1].headers


async def test_mapped_ipv6_and_link_local_mac(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    async with client.get("/", headers=proxy_headers(xff="::ffff:10.0.0.5")) as response:
        assert (await response.json())["instance"] == "inst-a"
        assert "ip_address=10.0.0.5" in control.lookups[-1]
    link_local = "fe80::f816:3eff:fe12:3456"
    async with client.get("/", headers=proxy_headers(xff=link_local, network="net-c")) as response:
        assert (await response.json())["instance"] == "inst-c"
        assert "mac_address=fa:16:3e:12:34:56" in control.lookups[-1]


async def test_api_errors_and_bytes_are_relayed_unchanged(client: aiohttp.ClientSession) -> None:
    async with client.get("/missing", headers=proxy_headers()) as response:
        assert response.status == 404
        assert await response.text() == "Not Found"
    async with client.get("/gz", headers=proxy_headers(), auto_decompress=False) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.content_type == "application/octet-stream"
        assert await response.read() == b"\x1f\x8b\x08\x00payload"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (proxy_headers(router="router-1"), "Both network net-a and router router-1 defined."),
        (proxy_headers(network=None), "X-Neutron-Router-ID or X-OVN-Network-ID header is required"),
        (proxy_headers(xff=None), "X-Forwarded-For header is missing."),
        (proxy_headers(xff="10.0.0.5, 10.0.0.6"), "must hold one address"),
        (proxy_headers(xff="not-an-ip"), "is not an IP address"),
        (proxy_headers(network="net/../x"), "is not a valid id"),
    ],
)
async def test_bad_proxy_headers_are_400(
    client: aiohttp.ClientSession, headers: dict[str, str], message: str
) -> None:
    async with client.get("/", headers=headers) as response:
        assert response.status == 400
        assert message in await response.text()


async def test_repeated_forwarded_for_is_400(client: aiohttp.ClientSession) -> None:
    headers = [("X-Forwarded-For", "10.0.0.5"), ("X-Forwarded-For", "10.0.0.6")]
    headers.append(("X-Neutron-Network-ID", "net-a"))
    async with client.get("/", headers=headers) as response:
        assert response.status == 400
        assert "given 2 times" in await response.text()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (proxy_headers(xff="10.9.9.9"), "Instance was not found on network net-a."),
        (proxy_headers(xff="10.0.0.9"), "Instance was not found on network net-a."),
        (proxy_headers(network=None, router="nope"), "Instance was not found on router nope."),
        (proxy_headers(network=None, router="router-1", xff="10.0.0.6"), "on router router-1."),
        (proxy_headers(xff="fe80::1", network="net-c"), "Instance was not found on network"),
    ],
)
async def test_unknown_guest_is_404(
    client: aiohttp.ClientSession, headers: dict[str, str], message: str
) -> None:
    async with client.get("/", headers=headers) as response:
        assert response.status == 404
        assert message in await response.text()


async def test_unknown_guest_gets_neutrons_page_byte_for_byte(
    client: aiohttp.ClientSession,
) -> None:
    async with client.get("/", headers=proxy_headers(xff="10.9.9.9")) as response:
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert await response.read() == (  # neutron 29's encode_http_reponse
            b"<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
            b"  <h1>404 Not Found</h1>\n  Instance was not found on network net-a.<br /><br />"
            b"\n\n\n </body>\n</html>"
        )


async def test_two_ports_with_the_address_is_404(
    client: aiohttp.ClientSession, control: FakeControl
) -> None:
    control.add_port("p9", "net-c", "10.0.0.5", "inst-z")
    headers = proxy_headers(network=None, router="router-1")  # net-a and net-c both hold it
    async with client.get("/", headers=headers) as response:
        assert response.status == 404


async def test_socket_mode_stale_file_and_cleanup(make_config: Callable[..., AgentConfig]) -> None:
    config = make_config(metadata_proxy_socket_mode="user")
    os.makedirs(os.path.dirname(config.metadata_proxy_socket), exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(config.metadata_proxy_socket)  # bound, never listening: a dead agent's file
    stale.close()
    async with running(config) as started:
        mode = stat.S_IMODE(os.stat(started.path).st_mode)
        assert mode == 0o644
    assert not os.path.exists(config.metadata_proxy_socket)
    async with running(make_config(metadata_proxy_socket_mode="all")) as started:
        assert stat.S_IMODE(os.stat(started.path).st_mode) == 0o666


async def test_keep_alive_and_concurrency(agent: RunningAgent) -> None:
    connector = aiohttp.UnixConnector(path=agent.path, limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):
            async with session.get("http://m/", headers=proxy_headers()) as response:
                assert response.status == 200
        assert len(connector._conns) == 1  # one connection served all twenty


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_listen_backlog_is_honoured(make_config: Callable[..., AgentConfig]) -> None:
    async with running(make_config(metadata_backlog=1234)) as started:
        listing = subprocess.run(["ss", "-xl"], capture_output=True, text=True, check=True).stdout
    # The kernel reports the name the socket was bound under, before its rename into place.
    bound_as = os.path.join(os.path.dirname(started.path), f".agent-{os.getpid()}.sock")
    row = next(line.split() for line in listing.splitlines() if bound_as in line)
    assert row[3] == "1234"  # Send-Q of a listening socket is its backlog
