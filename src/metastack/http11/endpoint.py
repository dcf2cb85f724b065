"""Where a client connects: a unix socket path, or an http(s) URL's host, port and base path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Scheme = Literal["http", "https", "unix"]
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream: `address` is a host name / IP literal, or the socket path for unix."""

    scheme: Scheme
    address: str
    port: int = 0
    # Prefixed to every request target (a URL like http://api:8775/metadata).
    base_path: bytes = b""
    # The Host header value requests to this endpoint carry.
    host: bytes = b"localhost"

    @classmethod
    def unix(cls, path: str, host: bytes = b"localhost") -> Endpoint:
        """A unix socket (the proxy's agent, the agent's own socket in tests)."""
        return cls("unix", path, host=host)

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """An `http://host[:port][/base]` or `https://...` URL; ValueError otherwise."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL with a host")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a base URL takes no query or fragment")
        port = parts.port or _DEFAULT_PORTS[scheme]
        literal = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host = literal if port == _DEFAULT_PORTS[scheme] else f"{literal}:{port}"
        return cls(
            "https" if scheme == "https" else "http",
            parts.hostname,
            port,
            parts.path.rstrip("/").encode("ascii"),
            host.encode("ascii"),
        )

    @property
    def tls(self) -> bool:
        """True for https endpoints."""
        return self.scheme == "https"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.address}"
        host = self.host.decode("ascii", "replace")
        return f"{self.scheme}://{host}{self.base_path.decode('ascii', 'replace')}"
