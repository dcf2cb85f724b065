"""Typed settings per service, loaded once at the edge: TOML file, then environment, then flags.

A file section `[api]` maps to :class:`ApiConfig`; `METASTACK_API_<KEY>` environment
variables override single keys, flags override both. An environment value is the raw
text for a scalar key (string, number, boolean; empty allowed) and JSON for a list or a
table. Option names follow OpenStack's where an OpenStack option exists. Every field
carries its meaning (`description`): `metastack config sample` and the README's tables
are generated from them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from metastack.errors import ConfigError

DEFAULT_STATE_PATH = "/var/lib/metastack"
ApiName = Literal["control", "metadata"]
VendordataProvider = Literal["StaticJSON", "DynamicJSON"]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """A store's connection pool: kept connections, extra ones under load, wait for one."""

    size: int = 5
    overflow: int = 10
    timeout: float = 30.0


class _Section(BaseModel):
    # Inputs stay out of error texts: a token or secret must never reach a log.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class OptionError(ValueError):
    """A model-level check that failed on one named option (reported as `section.key`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def read_token_file(path: str) -> str:
    """The token in `path`, its trailing newline stripped; OptionError if unusable."""
    try:
        token = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise OptionError("admin_token_file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OptionError("admin_token_file", f"{path} is not UTF-8 text") from None
    if not token:
        raise OptionError("admin_token_file", f"{path} is empty")
    if any(ch in token for ch in "\r\n"):
        raise OptionError("admin_token_file", f"{path} holds more than one line")
    return token


def admin_token_from_file(cls: type[BaseModel], data: Any) -> Any:
    """Before validation: fill `admin_token` from `admin_token_file` (one of them only)."""
    if not isinstance(data, dict):
        return data
    path = data.get("admin_token_file")
    if path in (None, "") or not isinstance(path, str):
        return data  # unset, or a wrong type the field itself reports
    if data.get("admin_token") not in (None, ""):
        raise OptionError("admin_token_file", "admin_token is set too; keep one of them")
    return {**data, "admin_token": read_token_file(path)}


def single_line(value: str | None) -> str | None:
    """A secret goes into a header line: no line breaks."""
    if value is not None and any(ch in value for ch in "\r\n"):
        raise ValueError("must not contain line breaks")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a name or any other address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def missing_database_driver(url: str) -> str | None:
    """The driver module a database URL needs and that is not installed, if any."""
    scheme = url.partition(":")[0]
    backend, _, driver = scheme.partition("+")
    if backend != "postgresql":
        return None
    module = "psycopg2" if driver == "psycopg2" else "psycopg"
    return module if importlib.util.find_spec(module) is None else None


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


def _listen_or_off(value: str) -> str:
    if value:
        parse_hostport(value)
    return value


# The keys every service takes (the runner's: metastack.runner.RunConfig), defined once.
MetricsListen = Annotated[
    str,
    AfterValidator(_listen_or_off),
    Field(
        description="HOST:PORT serving Prometheus `/metrics`, `/healthz` (the process lives) "
        'and `/readyz` (it can do its job); `""` = off'
    ),
]
LogLevelKey = Annotated[
    Literal["debug", "info", "warning", "error"],
    Field(description="`debug`, `info`, `warning`, `error`"),
]
LogFormatKey = Annotated[
    Literal["text", "json"],
    Field(description="`text` lines or `json` objects, on stderr (journald)"),
]
EventLoopKey = Annotated[
    Literal["auto", "asyncio", "uvloop"],
    Field(description="`auto` (uvloop when installed), `asyncio`, `uvloop`"),
]
ShutdownTimeout = Annotated[
    float, Field(ge=0, description="seconds requests in flight get to finish at SIGTERM")
]


class VendordataConfig(_Section):
    """Vendor data of the metadata API (nova's `[api] vendordata_*`)."""

    providers: list[VendordataProvider] = Field(
        ["StaticJSON"], description="`StaticJSON`, `DynamicJSON`"
    )
    static_json: str | None = Field(
        None, description="path of the static vendor data JSON file (read once at start)"
    )
    dynamic_targets: list[str] = Field(
        [], description="`name@http(s)://url` services called for `vendor_data2.json`"
    )
    dynamic_connect_timeout: float = Field(
        5.0, ge=0.1, description="seconds to connect to a target; a failing target is left out"
    )
    dynamic_read_timeout: float = Field(
        5.0, ge=0.0, description="seconds for a target's answer; a failing target is left out"
    )
    dynamic_ssl_certfile: str | None = Field(None, description="CA bundle for https targets")
    dynamic_failure_fatal: bool = Field(
        False, description="a failing target fails the request (503)"
    )

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

    database_url: str = Field(
        f"sqlite:///{DEFAULT_STATE_PATH}/metastack.sqlite",
        description="SQLAlchemy URL of the store; `postgresql+psycopg://user@host/db` for "
        "PostgreSQL (needs the `metastack[postgresql]` extra)",
    )
    metadata_proxy_shared_secret: str = Field(
        "",
        repr=False,
        description="HMAC key shared with the metadata agents; required with the metadata "
        "API in proxied mode",
    )
    control_listen: str = Field(
        "127.0.0.1:8774",
        description="control API address; any other than a loopback one needs `admin_token`",
    )
    metadata_listen: str = Field("0.0.0.0:8775", description="metadata API address")
    tls_cert_file: str | None = Field(
        None,
        description="PEM certificate (chain) of both API listeners: they speak HTTPS "
        "(TLS 1.2+); together with `tls_key_file`",
    )
    tls_key_file: str | None = Field(
        None, description="PEM private key of `tls_cert_file`; together with it"
    )
    tls_client_ca_file: str | None = Field(
        None,
        description="PEM CA bundle: the metadata API requires a client certificate signed "
        "by one of these CAs (the agents' `nova_client_cert`); needs `tls_cert_file`",
    )
    enabled_apis: list[ApiName] = Field(
        ["control", "metadata"], description="which APIs this process serves"
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="worker processes",
        json_schema_extra={"default_text": "number of CPUs", "example": 4},
    )
    admin_token: str | None = Field(
        None,
        repr=False,
        description="every control-API call needs `X-Auth-Token` with this token (compared "
        "in constant time, never logged); required unless `control_listen` is a loopback "
        'address; `""` = none',
    )
    admin_token_file: str | None = Field(
        None,
        description="a file holding `admin_token`, read at start (trailing newline "
        "stripped); not together with `admin_token`",
    )
    # nova: [neutron] service_metadata_proxy.
    service_metadata_proxy: bool = Field(
        True,
        description="`true`: guests come through the metadata agents (signed headers); "
        "`false` = direct mode, the instance is found by the peer address",
    )
    trusted_proxies: list[str] = Field(
        [],
        description="direct mode: addresses/CIDRs whose `X-Forwarded-For` is believed",
    )
    dhcp_domain: str = Field("novalocal", description="EC2 `hostname` suffix")
    metadata_cache_expiration: int = Field(
        300,
        ge=0,
        description="upper bound on a cached document's age (s), changes invalidate it at "
        "once; 0 disables the cache",
    )
    metadata_cache_size: int = Field(10000, ge=1, description="cached instances per worker")
    metadata_cache_prewarm: bool = Field(
        True,
        description="render created or changed instances in the background, before their "
        "guests ask",
    )
    max_user_data_bytes: int = Field(
        65535, ge=0, description="user data limit (base64 length, as nova)"
    )
    # neutron's agent scheduling options.
    agent_down_time: float = Field(
        75.0,
        gt=0,
        description="seconds without a state report after which an agent is dead; the "
        "periodic scheduling pass runs every half of it",
    )
    dhcp_agents_per_network: int = Field(1, ge=1, description="DHCP agents per network")
    max_l3_agents_per_router: int = Field(
        1,
        ge=1,
        description="L3 agents per router; 2 or more makes new routers HA (a VRRP id each)",
    )
    allow_automatic_dhcp_failover: bool = Field(
        True, description="move networks off dead DHCP agents"
    )
    allow_automatic_l3agent_failover: bool = Field(
        True, description="move routers off dead L3 agents"
    )
    metrics_listen: MetricsListen = ""
    log_level: LogLevelKey = "info"
    log_format: LogFormatKey = "text"
    event_loop: EventLoopKey = "auto"
    shutdown_timeout: ShutdownTimeout = 5.0
    change_retention: int = Field(
        86400,
        ge=1,
        description="seconds the change feed keeps a revision; older ones are pruned, and a "
        "follower asking for one gets 410 and reads everything again",
    )
    # oslo.db's names for SQLAlchemy's pool_size, max_overflow and pool_timeout.
    max_pool_size: int = Field(
        5, ge=1, description="store connections each worker keeps open (its pool)"
    )
    max_overflow: int = Field(
        10,
        ge=0,
        description="connections a worker may open beyond its pool under load (closed "
        "again when returned to a full pool)",
    )
    pool_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a store call waits for a free connection before it fails (503)",
    )
    vendordata: VendordataConfig = Field(
        VendordataConfig(), description="vendor data (`[api.vendordata]`)"
    )

    _admin_token_file = model_validator(mode="before")(admin_token_from_file)

    @model_validator(mode="after")
    def _tls_files_together(self) -> ApiConfig:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "tls_key_file" if self.tls_cert_file else "tls_cert_file"
            other = "tls_cert_file" if self.tls_cert_file else "tls_key_file"
            raise OptionError(missing, f"{other} is set but {missing} is not; set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise OptionError(
                "tls_client_ca_file", "needs tls_cert_file and tls_key_file (TLS listeners)"
            )
        return self

    def pool(self) -> PoolSettings:
        """The connection pool settings of this API's store."""
        return PoolSettings(self.max_pool_size, self.max_overflow, self.pool_timeout)

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

    @field_validator("metadata_proxy_shared_secret", "admin_token")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        return single_line(value)

    @field_validator("database_url")
    @classmethod
    def _driver_installed(cls, url: str) -> str:
        module = missing_database_driver(url)
        if module is not None:
            raise ValueError(
                f"PostgreSQL needs the {module} driver, which is not installed: "
                "pip install 'metastack[postgresql]'"
            )
        return url


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


def is_structured(annotation: Any) -> bool:
    """A list or a table (a nested model, a dict), possibly optional: JSON in the environment."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset, dict):
        return True
    if origin in (Union, types.UnionType):
        return any(is_structured(arg) for arg in get_args(annotation) if arg is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _env_overrides(
    section: str, model: type[_Section], environ: Mapping[str, str]
) -> dict[str, Any]:
    """`METASTACK_<SECTION>_<KEY>`: JSON for lists and tables, the raw text for the rest.

    A scalar's text goes to validation as is, so `""` is an empty string (which, e.g.,
    disables the proxy's control socket) and `"5"` becomes 5 for a number.
    """
    prefix = f"METASTACK_{section.upper().replace('.', '_')}_"
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name not in model.model_fields:
            raise ConfigError(f"{key}: unknown option {section}.{name}")
        annotation = model.model_fields[name].annotation
        # A key that takes one string or a list (control_url) reads plain text as the string.
        takes_text = str in get_args(annotation) and raw[:1] not in "[{"
        if is_structured(annotation) and not takes_text:
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{key}: {section}.{name} is a list or table: expected JSON: {exc}"
                ) from None
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
        problems = "; ".join(_describe(section, err) for err in exc.errors())
        raise ConfigError(f"{where}{problems}") from None


def _describe(section: str, error: Any) -> str:
    """`section.key: reason` for one validation error (never the input value)."""
    where = [section, *(str(part) for part in error["loc"])]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, OptionError):
        where.append(cause.key)
        return f"{'.'.join(where)}: {cause}"
    return f"{'.'.join(where)}: {str(error['msg']).removeprefix('Value error, ')}"


def load_api_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ApiConfig:
    return load_section(ApiConfig, "api", path, environ, overrides)
