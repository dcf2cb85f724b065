"""Real certificates for TLS tests, made with the `openssl` command: a CA, a server
certificate for 127.0.0.1 (an IP SAN), a client certificate signed by the CA, and a client
certificate signed by another CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{folder}/{name}.key",
             "-out", f"{folder}/{name}.pem")  # fmt: skip


def _signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{folder}/{name}.key", "-out", f"{folder}/{name}.csr")  # fmt: skip
    _openssl("x509", "-req", "-in", f"{folder}/{name}.csr", "-CA", f"{folder}/{ca}.pem",
             "-CAkey", f"{folder}/{ca}.key", "-CAcreateserial", "-days", "2",
             "-extfile", f"{folder}/{name}.ext", "-out", f"{folder}/{name}.pem")  # fmt: skip


def make_pki(folder: Path) -> Path:
    """`ca`, `server` (127.0.0.1), `client` (by ca), `other-ca` and `stranger` (by other-ca):
    each NAME.pem with its NAME.key, in `folder`; skips the test without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _signed(folder, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _signed(folder, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return folder
