"""An echo handler and the limits the http11 tests serve it with."""

from __future__ import annotations

import asyncio
import json

from metastack.http11 import Limits, Request, Response

LIMITS = Limits(
    max_header_bytes=2048,
    max_headers=20,
    max_body_bytes=100,
    header_timeout=0.3,
    keepalive_timeout=0.6,
)


async def echo(request: Request, peer: str) -> Response:
    """Answers what it received as JSON; /sleep waits 0.3 s first."""
    if request.target == b"/sleep":
        await asyncio.sleep(0.3)
    body = json.dumps(
        {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "version": request.version,
            "headers": [[n.decode(), v.decode()] for n, v in request.headers],
            "body": request.body.decode(),
        }
    ).encode()
    return Response(200, b"OK", [(b"Content-Type", b"application/json")], body)
