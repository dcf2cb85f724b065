"""Vendor data: the static JSON file and the dynamic targets called for vendor_data2.json."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from metastack.config import VendordataConfig
from metastack.errors import ConfigError, UpstreamUnavailable
from metastack.metadata import vendordata_request_body
from metastack.metadata.model import Instance

log = logging.getLogger(__name__)

USER_AGENT = "metastack-vendordata"


def load_static(config: VendordataConfig) -> object | None:
    """Parse the static vendor data file once at start; a broken file is a ConfigError."""
    if config.static_json is None:
        return None
    try:
        with open(config.static_json, encoding="utf-8") as handle:
            value: object = json.load(handle)
            return value
    except OSError as exc:
        raise ConfigError(
            f"api.vendordata.static_json: {config.static_json}: {exc.strerror}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"api.vendordata.static_json: {config.static_json}: not valid JSON: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str


def parse_targets(entries: list[str]) -> list[Target]:
    """`name@url` entries; later duplicates of a name are skipped, as nova does."""
    targets: list[Target] = []
    seen: set[str] = set()
    for entry in entries:
        name, _, url = entry.partition("@")
        if name in seen:
            log.warning("vendordata target %s listed twice; using the first", name)
            continue
        seen.add(name)
        targets.append(Target(name, url))
    return targets


class DynamicVendordata:
    """Calls every dynamic target concurrently; a failing target is left out."""

    def __init__(self, config: VendordataConfig) -> None:
        self._config = config
        self._targets = parse_targets(config.dynamic_targets)
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return "DynamicJSON" in self._config.providers and bool(self._targets)

    async def start(self) -> None:
        if not self.enabled:
            return
        ssl_context: ssl.SSLContext | bool = True
        if self._config.dynamic_ssl_certfile:
            ssl_context = ssl.create_default_context(cafile=self._config.dynamic_ssl_certfile)
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._config.dynamic_connect_timeout,
            sock_read=self._config.dynamic_read_timeout,
            total=self._config.dynamic_connect_timeout + self._config.dynamic_read_timeout,
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(ssl=ssl_context),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, instance: Instance) -> Mapping[str, object]:
        """One JSON value per target that answered; raises only if failures are fatal."""
        if self._session is None:
            return {}
        body = vendordata_request_body(instance)
        results = await asyncio.gather(
            *(self._call(target, body) for target in self._targets), return_exceptions=True
        )
        values: dict[str, object] = {}
        for target, result in zip(self._targets, results, strict=True):
            if isinstance(result, BaseException):
                if self._config.dynamic_failure_fatal:
                    raise UpstreamUnavailable(f"vendordata target {target.name}: {result}")
                log.warning("vendordata target %s failed: %s", target.name, result)
                continue
            values[target.name] = result
        return values

    async def _call(self, target: Target, body: Mapping[str, object]) -> object:
        assert self._session is not None
        async with self._session.post(target.url, json=body) as response:
            if response.status != 200:
                raise UpstreamUnavailable(f"HTTP {response.status}")
            raw = await response.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UpstreamUnavailable(f"reply is not JSON: {exc}") from None
