"""TLS contexts: the API's listeners (server side, optionally asking for a client certificate)
and the control API's clients (a CA bundle to verify the server). TLS 1.2 or newer only.

Files are read when a context is made; a file that cannot be used is a :class:`TlsFileError`
naming the option that points at it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from metastack.config import OptionError


class TlsFileError(OptionError):
    """A certificate, key or CA file is missing, unreadable or not what it should be."""


def _readable(key: str, path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TlsFileError(key, f"cannot read {path}: {exc.strerror}") from None
    return path


def server_context(
    cert_file: str, key_file: str, *, client_ca_file: str | None = None, prefix: str = ""
) -> ssl.SSLContext:
    """A listener's context; with `client_ca_file`, a client certificate signed by one of
    its CAs is required (the handshake fails without one). `prefix` goes before the
    option names in errors (`api.`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _readable(f"{prefix}tls_cert_file", cert_file)
    _readable(f"{prefix}tls_key_file", key_file)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsFileError(
            f"{prefix}tls_cert_file",
            f"{cert_file} and tls_key_file {key_file} are not a PEM certificate and its key: {exc}",
        ) from None
    if client_ca_file:
        _readable(f"{prefix}tls_client_ca_file", client_ca_file)
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except ssl.SSLError as exc:
            raise TlsFileError(
                f"{prefix}tls_client_ca_file", f"{client_ca_file} is not a PEM CA bundle: {exc}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: str | None, *, key: str = "control_ca_file") -> ssl.SSLContext:
    """A client's context verifying the server against `ca_file` (the system CAs when
    None); `key` names the option in errors."""
    if ca_file:
        _readable(key, ca_file)
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as exc:
        raise TlsFileError(key, f"{ca_file} is not a PEM CA bundle: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def ca_file_problem(key: str, ca_file: str | None) -> str | None:
    """Why `ca_file` cannot verify servers (`key: reason`, for exit status 2), or None."""
    if not ca_file:
        return None
    try:
        client_context(ca_file, key=key)
    except TlsFileError as exc:
        return f"{exc.key}: {exc}"
    return None
