"""Fake control API and fake metadata API for the agent tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from metastack import identity

SECRET = "s3cret"


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    """Serve an app on 127.0.0.1 (an ephemeral port by default); yields the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))  # bound here, so the port is known without a race
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
        sock.close()


def port_doc(
    port_id: str, network_id: str, ip: str, device_id: str, project_id: str, mac: str
) -> dict[str, Any]:
    """A port object in the control API's shape."""
    return {
        "id": port_id,
        "network_id": network_id,
        "project_id": project_id,
        "mac_address": mac,
        "fixed_ips": [{"subnet_id": f"sub-{network_id}", "ip_address": ip}],
        "device_id": device_id,
        "device_owner": "compute:nova" if device_id else "",
        "floating_ip": None,
        "vif_type": "ovs",
        "device_name": f"tap{port_id[:11]}",
    }


@dataclass
class FakeControl:
    """Ports, routers and a change feed with long-poll; records every lookup."""

    url: str = ""
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0
    lookups: list[str] = field(default_factory=list)
    feed_polls: list[int] = field(default_factory=list)
    feed_down: bool = False
    kept_from: int = 1  # the oldest revision the feed still keeps (see `prune`)
    # When set, port lookups wait for it (to interleave a change with a lookup in flight).
    lookup_gate: asyncio.Event | None = None
    lookup_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def add_port(self, port_id: str, network_id: str, ip: str, device_id: str, **kw: str) -> None:
        """Create a port without announcing it (initial state)."""
        self.ports[port_id] = port_doc(
            port_id,
            network_id,
            ip,
            device_id,
            kw.get("project_id", f"proj-{device_id}"),
            kw.get("mac", "fa:16:3e:00:00:01"),
        )

    def add_router(self, router_id: str, networks: list[str]) -> None:
        """A router with one interface per network."""
        self.routers[router_id] = {
            "id": router_id,
            "interfaces": [
                {"subnet_id": f"sub-{n}", "network_id": n, "port_id": f"rp-{n}", "ip_address": ""}
                for n in networks
            ],
        }

    async def record(self, resource: str, resource_id: str, action: str, **kw: str) -> None:
        """Bump the revision and wake long-polls, as every control API write does."""
        async with self._changed:
            self.revision += 1
            self.changes.append(
                {
                    "revision": self.revision,
                    "resource": resource,
                    "resource_id": resource_id,
                    "action": action,
                    "project_id": kw.get("project_id", ""),
                    "network_id": kw.get("network_id", ""),
                    "instance_id": kw.get("instance_id", ""),
                }
            )
            self._changed.notify_all()

    async def move_port(self, port_id: str, device_id: str, project_id: str) -> None:
        """Give a port to another instance and announce it."""
        port = self.ports[port_id]
        port["device_id"], port["project_id"] = device_id, project_id
        await self.record("port", port_id, "update", network_id=port["network_id"])

    async def delete_port(self, port_id: str) -> None:
        """Delete a port and announce it."""
        port = self.ports.pop(port_id)
        await self.record("port", port_id, "delete", network_id=port["network_id"])

    def prune(self, through: int) -> None:
        """Forget the changes up to revision `through`, as change_retention does."""
        self.changes = [c for c in self.changes if c["revision"] > through]
        self.kept_from = through + 1

    async def applied(self, revision: int | None = None) -> None:
        """Wait until the agent polls the feed from `revision` (it has applied all before)."""
        target = self.revision if revision is None else revision
        for _ in range(500):
            if self.feed_polls and self.feed_polls[-1] >= target:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"agent never caught up with revision {target}")

    async def _ports(self, request: web.Request) -> web.Response:
        self.lookups.append(request.path_qs)
        networks = set(request.query.getall("network_id", []))
        ip = request.query.get("ip_address")
        mac = request.query.get("mac_address")
        found = [
            port
            for port in self.ports.values()
            if port["network_id"] in networks
            and (ip is None or any(f["ip_address"] == ip for f in port["fixed_ips"]))
            and (mac is None or port["mac_address"] == mac)
        ]
        # Deep copy, so later edits of the fake do not reach an answer already made.
        answer = {"ports": json.loads(json.dumps(found))}
        if self.lookup_gate is not None:
            self.lookup_arrived.set()
            await self.lookup_gate.wait()
        return web.json_response(answer)

    async def _router(self, request: web.Request) -> web.Response:
        self.lookups.append(request.path_qs)
        router = self.routers.get(request.match_info["router_id"])
        if router is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(router)

    async def _changes(self, request: web.Request) -> web.Response:
        if self.feed_down:
            return web.json_response({"error": "down"}, status=500)
        since = int(request.query.get("since", "0"))
        wait = min(int(request.query.get("wait", "0")), 60)
        self.feed_polls.append(since)
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.revision > since), timeout=wait
                )
            if since + 1 < self.kept_from and self.revision > since:
                gone = {"error": "pruned", "oldest_revision": self.kept_from}
                return web.json_response({**gone, "revision": self.revision}, status=410)
            newer = [c for c in self.changes if c["revision"] > since]
            return web.json_response({"revision": self.revision, "changes": newer})

    def app(self) -> web.Application:
        """The aiohttp app serving the pinned control API endpoints."""
        app = web.Application()
        app.router.add_get("/v1/ports", self._ports)
        app.router.add_get("/v1/routers/{router_id}", self._router)
        app.router.add_get("/v1/changes", self._changes)
        return app


@dataclass
class Seen:
    """One request as the fake metadata API received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeMetadata:
    """Checks the signature like nova and answers with the identity it was given."""

    secret: str
    name: str = "api"
    url: str = ""
    delay: float = 0.0
    # Extra seconds before answering these paths only.
    slow_paths: dict[str, float] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.path in self.slow_paths:
            await asyncio.sleep(self.slow_paths[request.path])
        instance_id = request.headers.get(identity.INSTANCE_ID, "")
        signature = request.headers.get(identity.INSTANCE_ID_SIGNATURE, "")
        if not identity.verify_instance_id(self.secret, instance_id, signature):
            return web.Response(status=403, text="Invalid proxy request signature.")
        if request.path == "/missing":
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        if request.path == "/gz":
            # Already-compressed user data: must arrive byte for byte, header included.
            return web.Response(
                body=b"\x1f\x8b\x08\x00payload",
                headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
            )
        return web.json_response(
            {
                "api": self.name,
                "instance": instance_id,
                "tenant": request.headers.get(identity.TENANT_ID, ""),
                "path": request.raw_path,
                "method": request.method,
                "body": body.decode(errors="replace"),
            }
        )

    def app(self) -> web.Application:
        """The aiohttp app answering every path."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition every 10 ms; fail the test after `timeout`."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def proxy_headers(
    xff: str | None = "10.0.0.5", network: str | None = "net-a", router: str | None = None
) -> dict[str, str]:
    """The headers a namespace proxy adds."""
    headers = {}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    if network is not None:
        headers["X-Neutron-Network-ID"] = network
    if router is not None:
        headers["X-Neutron-Router-ID"] = router
    return headers
