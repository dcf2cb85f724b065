"""A stand-in metadata agent: echoes what it received as JSON on a unix socket."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def echo(request: web.Request) -> web.StreamResponse:
    if request.path == "/slow":
        await asyncio.sleep(float(request.query.get("s", "10")))
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        },
        headers={"X-Agent": "fake"},
    )


def main(path: str) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, path=path, print=None, handle_signals=True)


if __name__ == "__main__":
    main(sys.argv[1])
