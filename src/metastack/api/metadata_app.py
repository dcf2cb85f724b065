"""The metadata API (port 8775): identify the instance, look the path up, answer nova's bytes."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from metastack import identity
from metastack.api.cache import DocumentCache, Watcher, make_watcher
from metastack.api.vendordata import DynamicVendordata, load_static
from metastack.config import ApiConfig
from metastack.errors import StoreError, UpstreamUnavailable
from metastack.metadata import (
    EC2_VERSION_LIST,
    Document,
    Documents,
    PasswordFile,
    RenderOptions,
    VendorData2,
    build_documents,
    is_version_root,
    render_vendor_data2,
)
from metastack.metadata.model import Instance
from metastack.store.base import MetadataStore

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=UTF-8"
HTML = "text/html; charset=UTF-8"
JSON = "application/json"
PASSWORD_MAX = 1020  # nova: 4 chunks of 255 characters
SEED_BYTES = 512


class Refusal(Exception):
    """A request the API answers with an error status and a short message."""

    def __init__(self, status: int, message: str, *, mismatch: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.mismatch = mismatch


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the instance uuid, the project it must belong to, its address."""

    instance_id: str
    project_id: str | None
    address: str | None


def _respond(status: int, body: bytes, content_type: str) -> web.Response:
    return web.Response(
        status=status, body=body, headers=CIMultiDict({"Content-Type": content_type})
    )


def _refuse(status: int, message: str) -> web.Response:
    return _respond(status, message.encode(), TEXT)


def holds_address(instance: Instance, address: str) -> bool:
    """Whether one of the instance's ports holds the forwarded address (an IPv6 link-local
    address: the MAC behind it). An address that does not parse holds nothing."""
    for vif in instance.vifs:
        for fixed in vif.port.fixed_ips:
            if fixed.ip_address == address:
                return True
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.is_link_local:
            mac = identity.mac_from_eui64(ip)
            return mac is not None and any(v.port.mac_address.lower() == mac for v in instance.vifs)
    for vif in instance.vifs:
        for fixed in vif.port.fixed_ips:
            try:
                if ipaddress.ip_address(fixed.ip_address) == ip:
                    return True
            except ValueError:
                continue
    return False


class SignedHeaders:
    """Neutron-proxied mode: the agent names the instance and signs its id."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    async def identify(self, request: web.Request) -> Caller:
        headers = request.headers
        instance_id = headers.get(identity.INSTANCE_ID)
        signature = headers.get(identity.INSTANCE_ID_SIGNATURE)
        tenant_id = headers.get(identity.TENANT_ID)
        if instance_id is None:
            raise Refusal(400, "X-Instance-ID header is missing from request.")
        if signature is None:
            raise Refusal(400, "X-Instance-ID-Signature header is missing from request.")
        if tenant_id is None:
            raise Refusal(400, "X-Tenant-ID header is missing from request.")
        if len(headers.getall(identity.INSTANCE_ID)) > 1:
            raise Refusal(400, "X-Instance-ID header must appear once.")
        if not identity.verify_instance_id(self._secret, instance_id, signature):
            raise Refusal(403, "Invalid proxy request signature.")
        return Caller(instance_id, tenant_id, headers.get(identity.FORWARDED_FOR))


class DirectAddress:
    """Direct mode for flat networks: the instance is found by the caller's address."""

    def __init__(self, store: MetadataStore, trusted_proxies: list[str]) -> None:
        self._store = store
        self._trusted = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]

    def _trusted_peer(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_address(self, request: web.Request) -> str | None:
        """The peer address, or the nearest untrusted X-Forwarded-For hop behind trusted peers."""
        address = request.remote
        if address is None or not self._trusted_peer(address):
            return address
        hops = [
            hop.strip()
            for value in request.headers.getall(identity.FORWARDED_FOR, [])
            for hop in value.split(",")
        ]
        for hop in reversed(hops):
            if not self._trusted_peer(hop):
                return hop
        return address

    async def identify(self, request: web.Request) -> Caller:
        address = self.client_address(request)
        if not address:
            raise Refusal(400, "The request has no source address.")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise Refusal(400, "X-Forwarded-For is not an IP address.") from None
        uuids = await asyncio.to_thread(self._store.find_instances_by_ip, address)
        if len(uuids) != 1:
            if len(uuids) > 1:
                log.warning("address %s belongs to %d instances; refusing", address, len(uuids))
            raise Refusal(404, "No instance found for this address.")
        return Caller(uuids[0], None, address)


class MetadataService:
    """The request handler: identification, cached documents, password and vendor data."""

    def __init__(
        self,
        config: ApiConfig,
        store: MetadataStore,
        *,
        today: Callable[[], datetime.date] = lambda: datetime.datetime.now(datetime.UTC).date(),
        watcher: Watcher | None = None,
    ) -> None:
        self._store = store
        self._static_vendordata = load_static(config.vendordata)
        self._dynamic = DynamicVendordata(config.vendordata)
        self._config = config
        self._today = today
        self._identify = (
            SignedHeaders(config.metadata_proxy_shared_secret).identify
            if config.service_metadata_proxy
            else DirectAddress(store, config.trusted_proxies).identify
        )
        self.cache = DocumentCache(
            store,
            self._build,
            watcher or make_watcher(config.database_url, store, poll_interval=0.05),
            max_entries=config.metadata_cache_size,
            max_age=float(config.metadata_cache_expiration),
            prewarm=config.metadata_cache_prewarm,
        )

    def _build(self, instance: Instance) -> Documents:
        options = RenderOptions(
            dhcp_domain=self._config.dhcp_domain,
            vendordata_static=self._static_vendordata,
            static_vendordata_enabled="StaticJSON" in self._config.vendordata.providers,
            today=self._today(),
        )
        return build_documents(instance, options)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.cache.start()
        await self._dynamic.start()
        yield
        await self._dynamic.stop()
        await self.cache.stop()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one metadata request; every failure becomes a status, never a traceback."""
        try:
            return await self._handle(request)
        except Refusal as refusal:
            response = _refuse(refusal.status, refusal.message)
            if refusal.mismatch:
                response.headers[identity.ADDRESS_MISMATCH] = "1"
            return response
        except StoreError as exc:  # StoreUnavailable and every other database failure
            log.warning("store failed: %s", exc)
            return _refuse(503, "The metadata store is unavailable; retry later.")
        except UpstreamUnavailable as exc:
            log.warning("vendordata failed: %s", exc)
            return _refuse(503, "A vendor data service is unavailable.")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            path = request.path
        except UnicodeDecodeError:
            raise Refusal(404, "Not found.") from None
        if is_version_root(path):
            return _respond(200, EC2_VERSION_LIST, TEXT)
        caller = await self._identify(request)
        entry = await self.cache.get(caller.instance_id)
        if entry is None:
            raise Refusal(404, "Instance not found.")
        if caller.project_id is not None and entry.instance.project_id != caller.project_id:
            log.warning(
                "tenant %s asked for instance %s of another project",
                caller.project_id,
                caller.instance_id,
            )
            raise Refusal(404, "Instance not found.")
        if (
            caller.address is not None
            and self._config.service_metadata_proxy
            and not holds_address(entry.instance, caller.address)
        ):
            # The agent's lookup is older than the port's deletion or move: never answer
            # for an instance that no longer holds the guest's address.
            raise Refusal(404, "The instance does not hold the requesting address.", mismatch=True)
        result = entry.documents.lookup(path, caller.address)
        if isinstance(result, Document):
            body = result.body
            if result.needs_seed:
                body = result.materialize(base64.b64encode(os.urandom(SEED_BYTES)))
            return _respond(200, body, result.content_type)
        if isinstance(result, PasswordFile):
            return await self._password(request, entry.instance)
        if isinstance(result, VendorData2):
            dynamic = await self._dynamic.fetch(entry.instance) if self._dynamic.enabled else {}
            return _respond(200, render_vendor_data2(result.static, dynamic), JSON)
        raise Refusal(404, "Not found.")

    async def _password(self, request: web.Request, instance: Instance) -> web.Response:
        """nova's password handler: GET reads, one POST writes, anything else is 400."""
        if request.method == "GET":
            return _respond(200, instance.password.encode(), HTML)
        if request.method != "POST":
            raise Refusal(400, "GET and POST only are supported.")
        if instance.password:
            raise Refusal(409, "A password is already set.")
        if (request.content_length or 0) > PASSWORD_MAX:
            raise Refusal(400, "Request is too large.")
        body = b""
        while len(body) <= PASSWORD_MAX:
            chunk = await request.content.read(PASSWORD_MAX + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > PASSWORD_MAX:
            raise Refusal(400, "Request is too large.")
        try:
            password = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(400, "The password must be UTF-8 text.") from None
        if "\x00" in password:  # PostgreSQL cannot store it; no encrypted password has one
            raise Refusal(400, "The password must not contain NUL characters.")
        if not await asyncio.to_thread(self._store.set_password, instance.uuid, password):
            raise Refusal(409, "A password is already set.")
        self.cache.evict(instance.uuid)
        return _respond(200, b"", HTML)


METADATA_SERVICE = web.AppKey("metadata_service", MetadataService)


def make_metadata_app(
    config: ApiConfig, store: MetadataStore, *, watcher: Watcher | None = None
) -> web.Application:
    """The metadata API as an aiohttp application: every path goes to one handler."""
    service = MetadataService(config, store, watcher=watcher)
    app = web.Application(client_max_size=64 * 1024)
    app[METADATA_SERVICE] = service
    app.cleanup_ctx.append(service.lifecycle)
    app.router.add_route("*", "/{tail:.*}", service.handle)
    return app
