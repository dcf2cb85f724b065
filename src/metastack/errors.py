"""The metastack error tree, translated at boundaries and mapped to HTTP once.

MetastackError
├── ConfigError            broken config file, env or flag (fails at start)
├── StoreError             the database failed or is unreachable (-> 503)
│   └── StoreUnavailable
├── NotFound               unknown object (-> 404)
├── Conflict               duplicate id / IP, password already set (-> 409)
├── InvalidInput           bad request data (-> 400)
└── UpstreamUnavailable    an HTTP peer is down or slow (-> 503)
"""

from __future__ import annotations


class MetastackError(Exception):
    """Base of every error metastack raises on purpose."""


class ConfigError(MetastackError):
    """A configuration file, environment variable or flag is invalid."""


class StoreError(MetastackError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is locked/full; retry later."""


class NotFound(MetastackError):
    """An object does not exist."""


class Conflict(MetastackError):
    """A write collides with existing state."""


class InvalidInput(MetastackError):
    """A request carries invalid data; the message names the field."""


class UpstreamUnavailable(MetastackError):
    """An upstream HTTP service is unreachable or timed out."""
