"""`metastack api` with TLS on both listeners, with real certificates: the control API over
https (CLI and agent verify it with a CA file), the metadata API requiring a client
certificate, and a real `metastack agent` presenting one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.test_api_process import METASTACK, SECRET, ApiProcess, started_api, write_config
from metastack.identity import sign_instance_id
from support.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(tmp_path: Path, pki: Path, **extra: str) -> Path:
    return write_config(
        tmp_path,
        tls_cert_file=f'"{pki / "server.pem"}"',
        tls_key_file=f'"{pki / "server.key"}"',
        tls_client_ca_file=f'"{pki / "ca.pem"}"',
        **extra,
    )


@pytest.fixture
def api(tmp_path: Path, pki: Path) -> Iterator[ApiProcess]:
    with started_api(tmp_path, tls_config(tmp_path, pki)) as process:
        yield ApiProcess(
            process.process,
            process.log,
            process.control.replace("http://", "https://"),
            process.metadata.replace("http://", "https://"),
        )


def context(pki: Path, client: str | None = None) -> ssl.SSLContext:
    """Verifies the server with our CA; presents `client`'s certificate if given."""
    ctx = ssl.create_default_context(cafile=pki / "ca.pem")
    if client is not None:
        ctx.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")
    return ctx


def call(
    url: str, ctx: ssl.SSLContext, method: str = "GET", body: Any = None, **headers: str
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10, context=ctx) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METASTACK, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def boot_instance(api: ApiProcess, pki: Path) -> tuple[str, str]:
    """A network, a subnet and an instance at 10.0.0.5 made through the CLI over https:
    (network id, instance uuid)."""
    made = cli(
        "network", "create", "tls-net", "--project", "p", "--json",
        "--url", api.control, "--ca-file", str(pki / "ca.pem"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    network = json.loads(made.stdout)["id"]
    env = {"METASTACK_URL": api.control, "METASTACK_CA_FILE": str(pki / "ca.pem")}
    made = cli("subnet", "create", "tls-sub", "--network", network, "--cidr", "10.0.0.0/24", **env)
    assert made.returncode == 0, made.stderr
    status, body = call(
        api.control + "/v1/instances",
        context(pki),
        "POST",
        {
            "name": "vm",
            "project_id": "p",
            "hostname": "tls-guest",
            "networks": [{"network_id": network, "ip_address": "10.0.0.5"}],
        },
    )
    assert status == 201, body
    return network, str(json.loads(body)["uuid"])


def test_control_api_over_https_through_the_cli(api: ApiProcess, pki: Path) -> None:
    network, uuid = boot_instance(api, pki)
    ca = str(pki / "ca.pem")
    listed = cli("network", "list", "--json", METASTACK_URL=api.control, METASTACK_CA_FILE=ca)
    assert listed.returncode == 0, listed.stderr
    assert network in {item["id"] for item in json.loads(listed.stdout)}
    # Without our CA the server's certificate is not trusted: the CLI fails, saying why.
    refused = cli("network", "list", "--url", api.control, METASTACK_CA_FILE="")
    assert refused.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    # Plain http to a TLS listener gets no answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(
            api.control.replace("https://", "http://") + "/v1/networks", timeout=5
        )
    missing = cli("network", "list", "--url", api.control, "--ca-file", str(pki / "nope.pem"))
    assert missing.returncode == 2
    assert "--ca-file: cannot read" in missing.stderr and "nope.pem" in missing.stderr
    status, body = call(api.control + f"/v1/instances/{uuid}", context(pki))
    assert status == 200 and json.loads(body)["uuid"] == uuid


def signed(uuid: str) -> dict[str, str]:
    return {
        "X-Instance-ID": uuid,
        "X-Tenant-ID": "p",
        "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
    }


def raw_get(host: str, port: int, ctx: ssl.SSLContext, uuid: str) -> bytes:
    """One signed request on a TLS connection of our own: the server's alert surfaces
    as an SSLError (urllib would only say the connection closed)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(uuid).items())
    request = f"GET /latest/meta-data/ HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()
    with (
        socket.create_connection((host, port), timeout=10) as plain,
        ctx.wrap_socket(plain, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        return tls.recv(65536)


def test_metadata_api_requires_a_client_certificate_of_its_ca(api: ApiProcess, pki: Path) -> None:
    _, uuid = boot_instance(api, pki)
    url = api.metadata + "/openstack/latest/meta_data.json"
    host, port = api.metadata.removeprefix("https://").split(":")
    for client in (None, "stranger"):  # no certificate; one of another CA
        # TLS 1.2: the server checks the certificate within the handshake, which fails.
        tls12 = context(pki, client)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            raw_get(host, int(port), tls12, uuid)
        # TLS 1.3: the client's handshake ends before the server has checked; the server
        # then drops the connection without a byte of an answer.
        try:
            answer = raw_get(host, int(port), context(pki, client), uuid)
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert answer == b"", answer
    answer = raw_get(host, int(port), context(pki, "client"), uuid)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    status, body = call(url, context(pki, "client"), **signed(uuid))
    assert status == 200, body
    assert json.loads(body)["uuid"] == uuid


async def test_a_real_agent_gets_metadata_over_mutual_tls(
    api: ApiProcess, pki: Path, tmp_path: Path
) -> None:
    network, uuid = boot_instance(api, pki)
    socket_path = tmp_path / "agent.sock"
    toml = tmp_path / "agent.toml"
    toml.write_text(
        "[agent]\n"
        f'metadata_proxy_shared_secret = "{SECRET}"\n'
        f'control_url = "{api.control}"\n'
        f'control_ca_file = "{pki / "ca.pem"}"\n'
        f'metadata_endpoints = ["{api.metadata}"]\n'
        f'auth_ca_cert = "{pki / "ca.pem"}"\n'
        f'nova_client_cert = "{pki / "client.pem"}"\n'
        f'nova_client_priv_key = "{pki / "client.key"}"\n'
        f'metadata_proxy_socket = "{socket_path}"\n'
    )
    process = await asyncio.create_subprocess_exec(METASTACK, "agent", "--config", str(toml))
    try:
        for _ in range(1000):
            if socket_path.exists():
                break
            assert process.returncode is None, "the agent exited"
            await asyncio.sleep(0.01)
        connector = aiohttp.UnixConnector(path=str(socket_path))
        headers = {"X-Forwarded-For": "10.0.0.5", "X-Neutron-Network-ID": network}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                "http://169.254.169.254/openstack/latest/meta_data.json", headers=headers
            ) as response,
        ):
            body = await response.text()
        assert response.status == 200, body
        assert json.loads(body)["uuid"] == uuid
        assert json.loads(body)["hostname"].startswith("tls-guest")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tls_cert_file": '"/nonexistent/server.pem"'}, "api.tls_cert_file: cannot read"),
        ({"tls_key_file": '"/nonexistent/server.key"'}, "api.tls_key_file: cannot read"),
        ({"tls_client_ca_file": '"/nonexistent/ca.pem"'}, "api.tls_client_ca_file: cannot read"),
        ({"tls_key_file": '""'}, "api.tls_key_file: tls_cert_file is set but tls_key_file"),
        ({"tls_key_file": "CA_AS_KEY"}, "api.tls_cert_file:"),
    ],
)
def test_bad_tls_files_exit_2_naming_the_key(
    tmp_path: Path, pki: Path, change: dict[str, str], needle: str
) -> None:
    config = tls_config(tmp_path, pki)
    text = config.read_text()
    for key, value in change.items():
        value = f'"{pki / "ca.pem"}"' if value == "CA_AS_KEY" else value
        text = "\n".join(
            f"{key} = {value}" if line.startswith(f"{key} =") else line
            for line in text.splitlines()
        )
    config.write_text(text + "\n")
    for extra in (["--check"], []):
        result = cli("api", "--config", str(config), *extra)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr
    assert not (tmp_path / "api.sqlite").exists()  # refused before the database


def test_agent_control_ca_file_unreadable_exits_2(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'[agent]\nmetadata_proxy_shared_secret = "s"\ncontrol_ca_file = "{tmp_path / "no.pem"}"\n'
    )
    result = cli("agent", "--config", str(toml), "--check")
    assert result.returncode == 2
    assert "agent.control_ca_file: cannot read" in result.stderr
