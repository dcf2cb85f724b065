"""Typed settings per service, loaded once at the edge: TOML file, then environment, then flags.

A file section `[api]` maps to :class:`ApiConfig`; `METASTACK_API_<KEY>` environment
variables override single keys (lists and tables as JSON), flags override both.
Option names follow OpenStack's where an OpenStack option exists.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from metastack.errors import ConfigError

DEFAULT_STATE_PATH = "/var/lib/metastack"
ApiName = Literal["control", "metadata"]
VendordataProvider = Literal["StaticJSON", "DynamicJSON"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_hostport(value: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or `:port` into (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be an integer in {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


class VendordataConfig(_Section):
    providers: list[VendordataProvider] = ["StaticJSON"]
    static_json: str | None = None
    dynamic_targets: list[str] = []
    dynamic_connect_timeout: float = Field(5.0, ge=0.1)
    dynamic_read_timeout: float = Field(5.0, ge=0.0)
    dynamic_ssl_certfile: str | None = None
    dynamic_failure_fatal: bool = False

    @field_validator("dynamic_targets")
    @classmethod
    def _targets_have_names(cls, targets: list[str]) -> list[str]:
        for target in targets:
            name, at, url = target.partition("@")
            if not at or not name or not url.startswith(("http://", "https://")):
                raise ValueError(f"target {target!r} is not name@http(s)://url")
        return targets


class ApiConfig(_Section):
    """`metastack api`: control API and/or metadata API."""

    database_url: str = f"sqlite:///{DEFAULT_STATE_PATH}/metastack.sqlite"
    metadata_proxy_shared_secret: str = ""
    control_listen: str = "0.0.0.0:8774"
    metadata_listen: str = "0.0.0.0:8775"
    enabled_apis: list[ApiName] = ["control", "metadata"]
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    admin_token: str | None = None
    # nova: [neutron] service_metadata_proxy. False = direct mode (instance by peer address).
    service_metadata_proxy: bool = True
    # Direct mode only: peers whose X-Forwarded-For is believed (addresses or CIDRs).
    trusted_proxies: list[str] = []
    dhcp_domain: str = "novalocal"
    # Upper bound on a cached document's age in seconds; changes invalidate at once. 0 = no cache.
    metadata_cache_expiration: int = Field(300, ge=0)
    metadata_cache_size: int = Field(10000, ge=1)
    # Render created or changed instances in the background, before their guests ask.
    metadata_cache_prewarm: bool = True
    max_user_data_bytes: int = Field(65535, ge=0)
    vendordata: VendordataConfig = VendordataConfig()

    @field_validator("control_listen", "metadata_listen")
    @classmethod
    def _listen_is_hostport(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("enabled_apis")
    @classmethod
    def _some_api(cls, apis: list[str]) -> list[str]:
        if not apis:
            raise ValueError("at least one of control, metadata")
        return apis

    @field_validator("metadata_proxy_shared_secret")
    @classmethod
    def _secret_printable(cls, secret: str) -> str:
        if any(ch in secret for ch in "\r\n"):
            raise ValueError("must not contain line breaks")
        return secret


def http_urls(value: str | list[str]) -> str | list[str]:
    """Validate one http(s) base URL or a non-empty list of them (kept in the shape given),
    trailing slashes removed."""
    urls = [value] if isinstance(value, str) else value
    if not urls:
        raise ValueError("at least one URL is required")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
    stripped = [url.rstrip("/") for url in urls]
    return stripped[0] if isinstance(value, str) else stripped


def url_list(value: str | list[str]) -> list[str]:
    """One URL or several, as a list."""
    return [value] if isinstance(value, str) else list(value)


S = TypeVar("S", bound=_Section)


def read_toml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read a TOML config file; a missing or broken file is a ConfigError naming the file."""
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _env_overrides(
    section: str, model: type[_Section], environ: Mapping[str, str]
) -> dict[str, Any]:
    prefix = f"METASTACK_{section.upper()}_"
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name not in model.model_fields:
            raise ConfigError(f"{key}: unknown option {section}.{name}")
        field_type = model.model_fields[name].annotation
        annotation = str(field_type)
        # A key that takes one string or a list (control_url) reads plain text as the string.
        structured = ("list" in annotation or "Config" in annotation) and str not in get_args(
            field_type
        )
        if raw[:1] in "[{" or structured:
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: expected JSON: {exc}") from None
        else:
            values[name] = raw
    return values


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_section(
    model: type[S],
    section: str,
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """Build one service's config from file section, environment and flag overrides."""
    document = read_toml(path)
    raw = document.get(section, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    values = _merge(raw, _env_overrides(section, model, environ or {}))
    values = _merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}{problems}") from None


def load_api_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ApiConfig:
    return load_section(ApiConfig, "api", path, environ, overrides)
