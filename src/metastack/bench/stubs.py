"""Stand-ins for the control API and the metadata API behind `bench agent-load`.

Run as a child process of the benchmark (`python -m metastack.bench.stubs PORTS_FILE API`):
serves both until interrupted and writes their ports to PORTS_FILE as JSON. The control API
knows a fixed set of ports and never changes; the metadata API checks the signature as nova
does and answers a small JSON document, on the lean http11 server (cheap, so that the agent
sets the pace) or on aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from metastack import identity
from metastack.http11 import HttpServer, Limits, Request, Response

SECRET = "s3cret"
NETWORKS = 10
GUESTS_PER_NETWORK = 50


def guest(n: int) -> tuple[str, str]:
    """(network id, IP) of guest n."""
    return f"net-{n % NETWORKS}", f"10.0.{n // NETWORKS // 250}.{n // NETWORKS % 250 + 2}"


def port_doc(n: int) -> dict[str, Any]:
    """Guest n's port in the control API's shape."""
    network, ip = guest(n)
    return {
        "id": f"port-{n}",
        "network_id": network,
        "project_id": f"proj-inst-{n}",
        "mac_address": f"fa:16:3e:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}",
        "fixed_ips": [{"subnet_id": f"sub-{network}", "ip_address": ip}],
        "device_id": f"inst-{n}",
        "device_owner": "compute:nova",
    }


def control_app(ports: list[dict[str, Any]]) -> web.Application:
    """`GET /v1/ports`, `/v1/routers/{id}` (none) and a change feed that stays silent."""

    async def find_ports(request: web.Request) -> web.Response:
        networks = set(request.query.getall("network_id", []))
        ip = request.query.get("ip_address")
        mac = request.query.get("mac_address")
        found = [
            port
            for port in ports
            if port["network_id"] in networks
            and (ip is None or any(f["ip_address"] == ip for f in port["fixed_ips"]))
            and (mac is None or port["mac_address"] == mac)
        ]
        return web.json_response({"ports": found})

    async def router(request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async def changes(request: web.Request) -> web.Response:
        await asyncio.sleep(min(int(request.query.get("wait", "0")), 60))
        return web.json_response({"revision": 0, "changes": []})

    app = web.Application()
    app.router.add_get("/v1/ports", find_ports)
    app.router.add_get("/v1/routers/{router_id}", router)
    app.router.add_get("/v1/changes", changes)
    return app


async def aiohttp_metadata(request: web.Request) -> web.Response:
    """The metadata API on aiohttp: the signed identity back as JSON, or 403."""
    instance = request.headers.get(identity.INSTANCE_ID, "")
    signature = request.headers.get(identity.INSTANCE_ID_SIGNATURE, "")
    if not identity.verify_instance_id(SECRET, instance, signature):
        return web.Response(status=403, text="Invalid proxy request signature.")
    tenant = request.headers.get(identity.TENANT_ID, "")
    return web.json_response({"uuid": instance, "project_id": tenant, "path": request.raw_path})


async def lean_metadata(request: Request, peer: str) -> Response:
    """The metadata API on the lean http11 server: the signed identity back, or 403."""
    headers = {name.lower(): value.decode() for name, value in request.headers}
    instance = headers.get(b"x-instance-id", "")
    if not identity.verify_instance_id(
        SECRET, instance, headers.get(b"x-instance-id-signature", "")
    ):
        return Response(403, b"Forbidden", [], b"Invalid proxy request signature.")
    body = json.dumps({"uuid": instance, "project_id": headers.get(b"x-tenant-id", "")})
    return Response(200, b"OK", [(b"Content-Type", b"application/json")], body.encode())


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """Serve an aiohttp app on an ephemeral port of 127.0.0.1; yields the port."""
    sock = socket.create_server(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
        sock.close()


async def serve(ports_file: Path, api: str) -> None:
    """Serve both stand-ins until cancelled; their ports go to `ports_file`."""
    ports = [port_doc(n) for n in range(NETWORKS * GUESTS_PER_NETWORK)]
    async with serving(control_app(ports)) as control_port:
        if api == "lean":
            sock = socket.create_server(("127.0.0.1", 0))
            lean = await HttpServer.start(lean_metadata, Limits(), sock, backlog=1024)
            try:
                listening = {"control": control_port, "api": sock.getsockname()[1]}
                ports_file.write_text(json.dumps(listening))
                await asyncio.Event().wait()
            finally:
                await lean.close(0)
        else:
            metadata = web.Application()
            metadata.router.add_route("*", "/{tail:.*}", aiohttp_metadata)
            async with serving(metadata) as api_port:
                ports_file.write_text(json.dumps({"control": control_port, "api": api_port}))
                await asyncio.Event().wait()


def loop_runner(name: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """asyncio.run, or uvloop.run when asked for and installed."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("bench: uvloop not installed; running on asyncio")
        else:
            return uvloop.run  # type: ignore[no-any-return,unused-ignore]
    return asyncio.run


def main(argv: list[str]) -> None:
    """`python -m metastack.bench.stubs PORTS_FILE lean|aiohttp`."""
    with contextlib.suppress(KeyboardInterrupt):
        loop_runner("uvloop")(serve(Path(argv[0]), argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
