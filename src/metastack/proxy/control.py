"""The control API on a unix socket: JSON over HTTP to add, remove and list listeners.

    GET    /health                         {"status": "ok", "listeners": N}
    GET    /listeners                      {"listeners": [spec, ...]}
    POST   /listeners         spec         201 {"listener": spec} | 200 if already held
    PUT    /listeners         {"listeners": [spec, ...]}   make the held set exactly this
    DELETE /listeners?netns=NS[&host=H&port=P]             {"removed": [spec, ...]}

A spec is {"netns", "host", "port", "network_id" | "router_id", "interface"?}.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from metastack.errors import Conflict
from metastack.http11 import REASONS, Request, Response
from metastack.netns.exec import NetnsError
from metastack.proxy.config import ListenerConfig
from metastack.proxy.listeners import Listeners


def json_response(status: int, document: Any) -> Response:
    """A JSON response."""
    body = json.dumps(document, separators=(",", ":")).encode() + b"\n"
    return Response(
        status, REASONS.get(status, b""), [(b"Content-Type", b"application/json")], body
    )


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _spec_json(spec: ListenerConfig) -> dict[str, Any]:
    return spec.model_dump(exclude_none=True)


def _invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


class ControlHandler:
    """Routes control requests to a Listeners set."""

    def __init__(self, listeners: Listeners) -> None:
        self.listeners = listeners

    async def __call__(self, request: Request, peer: str) -> Response:
        path, _, query = request.target.decode("latin-1").partition("?")
        method = request.method
        if path == "/health" and method == b"GET":
            return json_response(200, {"status": "ok", "listeners": len(self.listeners)})
        if path != "/listeners":
            return _error(404, f"no such resource {path}")
        try:
            if method == b"GET":
                specs = self.listeners.specs()
                return json_response(200, {"listeners": [_spec_json(s) for s in specs]})
            if method == b"POST":
                return await self._add(request.body)
            if method == b"PUT":
                return await self._replace(request.body)
            if method == b"DELETE":
                return await self._delete(query)
        except ValidationError as exc:
            return _error(400, _invalid(exc))
        except ValueError as exc:  # includes json.JSONDecodeError
            return _error(400, str(exc))
        return _error(405, f"{method.decode()} not allowed on /listeners")

    async def _add(self, body: bytes) -> Response:
        spec = ListenerConfig.model_validate_json(body)
        try:
            created = await self.listeners.add(spec)
        except Conflict as exc:
            return _error(409, str(exc))
        except NetnsError as exc:
            return _error(422, str(exc))
        return json_response(201 if created else 200, {"listener": _spec_json(spec)})

    async def _replace(self, body: bytes) -> Response:
        document = json.loads(body or b"{}")
        if not isinstance(document, dict) or not isinstance(document.get("listeners"), list):
            raise ValueError('expected {"listeners": [...]}')
        specs = [ListenerConfig.model_validate(item) for item in document["listeners"]]
        added, removed, failed = await self.listeners.replace(specs)
        return json_response(
            200,
            {
                "added": [_spec_json(s) for s in added],
                "removed": [_spec_json(s) for s in removed],
                "failed": [{"listener": _spec_json(s), "error": e} for s, e in failed],
                "listeners": [_spec_json(s) for s in self.listeners.specs()],
            },
        )

    async def _delete(self, query: str) -> Response:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if "netns" not in params:
            raise ValueError("netns is required (empty for the proxy's own namespace)")
        host = params.get("host")
        if host is not None:
            # Same normalisation as specs, so "[fe80::A9FE:a9fe]" matches what is held.
            host = ListenerConfig(host=host, network_id="x").host
        port = int(params["port"]) if "port" in params else None
        removed = await self.listeners.remove_matching(params["netns"], host, port)
        return json_response(200, {"removed": [_spec_json(s) for s in removed]})
