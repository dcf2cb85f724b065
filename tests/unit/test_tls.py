"""TLS contexts of the API's listeners and of the control API's clients, and their config."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from metastack.config import load_api_config
from metastack.errors import ConfigError
from metastack.tls import TlsFileError, ca_file_problem, client_context, server_context
from support.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_listener_contexts_are_tls_1_2_or_newer(pki: Path) -> None:
    plain = server_context(str(pki / "server.pem"), str(pki / "server.key"))
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    mutual = server_context(
        str(pki / "server.pem"), str(pki / "server.key"), client_ca_file=str(pki / "ca.pem")
    )
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    assert [ca["subject"] for ca in mutual.get_ca_certs()] == [((("commonName", "ca"),),)]
    assert client_context(str(pki / "ca.pem")).minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_key_of_another_certificate_is_refused_naming_the_key(pki: Path) -> None:
    with pytest.raises(TlsFileError) as failed:
        server_context(str(pki / "server.pem"), str(pki / "client.key"), prefix="api.")
    assert failed.value.key == "api.tls_cert_file"
    assert "client.key" in str(failed.value)


def test_a_ca_file_that_is_no_certificate_is_named(pki: Path) -> None:
    problem = ca_file_problem("agent.control_ca_file", str(pki / "server.key"))
    assert problem is not None and problem.startswith("agent.control_ca_file: ")
    assert ca_file_problem("agent.control_ca_file", str(pki / "ca.pem")) is None
    assert ca_file_problem("agent.control_ca_file", None) is None


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"tls_cert_file": "/c.pem"}, "api.tls_key_file: tls_cert_file is set but"),
        ({"tls_key_file": "/k.pem"}, "api.tls_cert_file: tls_key_file is set but"),
        ({"tls_client_ca_file": "/ca.pem"}, "api.tls_client_ca_file: needs tls_cert_file"),
    ],
)
def test_cert_and_key_come_together(values: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_api_config(overrides=values)
