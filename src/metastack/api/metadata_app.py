"""The metadata API (port 8775): identify the instance, look the path up, answer nova's bytes.

Served by the lean HTTP/1.1 server of :mod:`metastack.http11` (the agent's and proxy's
too): in a boot storm every request costs CPU the two other hops need as well.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

from metastack import identity
from metastack.api.cache import DocumentCache
from metastack.api.errorpage import error_page
from metastack.api.vendordata import DynamicVendordata, load_static
from metastack.config import ApiConfig
from metastack.errors import StoreError, UpstreamUnavailable
from metastack.http11 import REASONS, Headers, HttpServer, Limits, Request, Response
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
from metastack.metrics import MetadataMetrics
from metastack.store.base import MetadataStore
from metastack.store.watch import RevisionWatcher
from metastack.store.watchers import watcher_for

log = logging.getLogger(__name__)

TEXT = b"text/plain; charset=UTF-8"
HTML = b"text/html; charset=UTF-8"
JSON = b"application/json"
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


# Bodies up to here are read (a password is at most PASSWORD_MAX); bigger ones are refused
# with nova's answer to an oversized password.
MAX_BODY_BYTES = 64 * 1024
LIMITS = Limits(
    max_target_bytes=8190,  # the request-line bound of the servers nova's API runs on
    max_body_bytes=MAX_BODY_BYTES,
    body_too_large=(400, "Request is too large."),
)


def _respond(status: int, body: bytes, content_type: bytes) -> Response:
    return Response(
        status, REASONS.get(status, b"Unknown"), [(b"Content-Type", content_type)], body
    )


# nova raises these without an explanation, so the page carries WebOb's own text.
_WEBOB_TEXT = frozenset({404, 409})


def _refuse(status: int, message: str, accept: str | None) -> Response:
    """nova's error page (WebOb's, in the form `accept` prefers) for a refusal."""
    explanation = None if status in _WEBOB_TEXT else message
    content_type, body = error_page(status, accept, explanation)
    return _respond(status, body, content_type)


@functools.cache  # a handful of distinct content types, encoded once each
def _encoded(content_type: str) -> bytes:
    return content_type.encode("latin-1")


class Incoming:
    """A request as the API reads it: decoded path, case-insensitive headers, peer."""

    __slots__ = ("_by_name", "body", "headers", "method", "peer", "raw")

    def __init__(self, request: Request, peer: str) -> None:
        self.raw = request
        self.method = request.method.decode("latin-1")
        self.headers: Headers = request.headers
        self.body = request.body
        self.peer = peer
        self._by_name: dict[bytes, list[bytes]] | None = None

    def path(self) -> str:
        """The percent-decoded path; UnicodeDecodeError if it is not UTF-8, Refusal (400)
        for a target that is neither a path nor an absolute URL (`*`)."""
        target = self.raw.target
        if not target.startswith(b"/"):  # absolute form (a proxy's request line)
            parts = urlsplit(target)
            if not parts.scheme or not parts.netloc:
                raise Refusal(400, "Bad request target.")
            target = parts.path or b"/"
        raw = target.partition(b"?")[0].partition(b"#")[0]
        return unquote_to_bytes(raw).decode("utf-8")

    def header_all(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        by_name = self._by_name
        if by_name is None:  # one pass over the headers, for all the lookups that follow
            by_name = self._by_name = {}
            for key, value in self.headers:
                by_name.setdefault(key.lower(), []).append(value)
        return [
            value.decode("utf-8", "surrogateescape")
            for value in by_name.get(name.lower().encode(), ())
        ]

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        found = self.header_all(name)
        return found[0] if found else None


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

    MAX_KEPT = 65536

    def __init__(self, secret: str) -> None:
        self._secret = secret
        # instance id -> its signature: a guest asks dozens of times per boot, and the
        # HMAC need not be computed again for each (the comparison stays constant-time).
        self._expected: dict[str, str] = {}

    def _signed(self, instance_id: str, signature: str) -> bool:
        """:func:`identity.verify_instance_id`, with each id's signature computed once."""
        if not signature:
            return False
        expected = self._expected.get(instance_id)
        if expected is None:
            if len(self._expected) >= self.MAX_KEPT:
                self._expected.clear()  # forged ids cannot grow it without bound
            expected = identity.sign_instance_id(self._secret, instance_id)
            self._expected[instance_id] = expected
        return identity.signature_matches(expected, signature)

    async def identify(self, request: Incoming) -> Caller:
        instance_ids = request.header_all(identity.INSTANCE_ID)
        instance_id = instance_ids[0] if instance_ids else None
        signature = request.header(identity.INSTANCE_ID_SIGNATURE)
        tenant_id = request.header(identity.TENANT_ID)
        if instance_id is None:
            raise Refusal(400, "X-Instance-ID header is missing from request.")
        if signature is None:
            raise Refusal(400, "X-Instance-ID-Signature header is missing from request.")
        if tenant_id is None:
            raise Refusal(400, "X-Tenant-ID header is missing from request.")
        if len(instance_ids) > 1:
            raise Refusal(400, "X-Instance-ID header must appear once.")
        if not self._signed(instance_id, signature):
            raise Refusal(403, "Invalid proxy request signature.")
        return Caller(instance_id, tenant_id, request.header(identity.FORWARDED_FOR))


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

    def client_address(self, request: Incoming) -> str | None:
        """The peer address, or the nearest untrusted X-Forwarded-For hop behind trusted peers."""
        address = request.peer or None
        if address is None or not self._trusted_peer(address):
            return address
        hops = [
            hop.strip()
            for value in request.header_all(identity.FORWARDED_FOR)
            for hop in value.split(",")
        ]
        for hop in reversed(hops):
            if not self._trusted_peer(hop):
                return hop
        return address

    async def identify(self, request: Incoming) -> Caller:
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
        watcher: RevisionWatcher | None = None,
        metrics: MetadataMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else MetadataMetrics()
        self._store = store
        # A watcher handed in is its owner's to start and close (a worker shares one).
        self._own_watcher = watcher is None
        self.watcher = watcher or watcher_for(store)
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
            self.watcher,
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

    async def start(self) -> None:
        """Start the document cache (and its watcher) and the vendor data client."""
        if self._own_watcher:
            await self.watcher.start()
        await self.cache.start()
        await self._dynamic.start()

    async def stop(self) -> None:
        await self._dynamic.stop()
        await self.cache.stop()
        if self._own_watcher:
            await self.watcher.close()

    async def __call__(self, request: Request, peer: str) -> Response:
        """The HTTP server's handler: :meth:`handle` on the request as the API reads it,
        counted (tree, status, time)."""
        started = time.perf_counter()
        try:
            response = await self.handle(Incoming(request, peer))
        except Exception:  # the server answers 500
            self.metrics.observe(request.target, 500, time.perf_counter() - started)
            raise
        self.metrics.observe(request.target, response.status, time.perf_counter() - started)
        return response

    async def handle(self, request: Incoming) -> Response:
        """Answer one metadata request; every failure becomes a status, never a traceback."""
        try:
            return await self._handle(request)
        except Refusal as refusal:
            response = _refuse(refusal.status, refusal.message, request.header("accept"))
            if refusal.mismatch:
                response.headers.append((identity.ADDRESS_MISMATCH.encode(), b"1"))
            return response
        except StoreError as exc:  # StoreUnavailable and every other database failure
            log.warning("store failed: %s", exc)
            return _refuse(
                503, "The metadata store is unavailable; retry later.", request.header("accept")
            )
        except UpstreamUnavailable as exc:
            log.warning("vendordata failed: %s", exc)
            return _refuse(503, "A vendor data service is unavailable.", request.header("accept"))

    async def _handle(self, request: Incoming) -> Response:
        try:
            path = request.path()
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
            return _respond(200, body, _encoded(result.content_type))
        if isinstance(result, PasswordFile):
            return await self._password(request, entry.instance)
        if isinstance(result, VendorData2):
            dynamic = await self._dynamic.fetch(entry.instance) if self._dynamic.enabled else {}
            return _respond(200, render_vendor_data2(result.static, dynamic), JSON)
        raise Refusal(404, "Not found.")

    async def _password(self, request: Incoming, instance: Instance) -> Response:
        """nova's password handler: GET reads, one POST writes, anything else is 400."""
        if request.method == "GET":
            return _respond(200, instance.password.encode(), HTML)
        if request.method != "POST":
            raise Refusal(400, "GET and POST only are supported.")
        if instance.password:
            raise Refusal(409, "A password is already set.")
        body = request.body  # whole: the server refuses bodies over MAX_BODY_BYTES
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


class MetadataServer:
    """The metadata API on one listening socket (TCP or unix), with its service."""

    def __init__(
        self,
        config: ApiConfig,
        store: MetadataStore,
        *,
        watcher: RevisionWatcher | None = None,
        metrics: MetadataMetrics | None = None,
    ) -> None:
        self.service = MetadataService(config, store, watcher=watcher, metrics=metrics)
        self._server: HttpServer | None = None
        self.port = 0

    async def start(
        self,
        sock: socket.socket | None = None,
        backlog: int = 4096,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve `sock` (already bound), or 127.0.0.1 on an ephemeral port (tests); HTTPS
        with `ssl_context`."""
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        await self.service.start()
        try:
            self._server = await HttpServer.start(
                self.service, LIMITS, sock, backlog, ssl_context=ssl_context
            )
        except BaseException:
            await self.service.stop()
            raise
        name = sock.getsockname()
        self.port = int(name[1]) if isinstance(name, tuple) else 0

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let replies in flight finish within `grace`, then stop the service."""
        if self._server is not None:
            await self._server.close(grace)
            self._server = None
            await self.service.stop()
