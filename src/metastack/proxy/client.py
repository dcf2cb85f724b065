"""A small synchronous client of the proxy's control API (for the network agent and tools)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode

from metastack.errors import UpstreamUnavailable


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ProxyClient:
    """Calls `metastack proxy`'s control socket; every method returns (status, document)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """One request; UpstreamUnavailable if the proxy cannot be reached."""
        conn = _UnixConnection(self.path, self.timeout)
        try:
            data = None if body is None else json.dumps(body)
            headers = {} if data is None else {"Content-Type": "application/json"}
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamUnavailable(f"proxy control socket {self.path}: {exc}") from exc
        finally:
            conn.close()

    def listeners(self) -> tuple[int, Any]:
        """GET /listeners."""
        return self.call("GET", "/listeners")

    def add(self, spec: dict[str, Any]) -> tuple[int, Any]:
        """POST /listeners: 201 added, 200 already held, 409 held for another identity."""
        return self.call("POST", "/listeners", spec)

    def replace(self, specs: list[dict[str, Any]]) -> tuple[int, Any]:
        """PUT /listeners: make the held set exactly `specs`."""
        return self.call("PUT", "/listeners", {"listeners": specs})

    def remove(
        self, netns: str, host: str | None = None, port: int | None = None
    ) -> tuple[int, Any]:
        """DELETE /listeners for a namespace ("" = the proxy's own), optionally one address."""
        query: dict[str, Any] = {"netns": netns}
        if host is not None:
            query["host"] = host
        if port is not None:
            query["port"] = port
        return self.call("DELETE", f"/listeners?{urlencode(query)}")
