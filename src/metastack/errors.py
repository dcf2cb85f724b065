"""The metastack error tree, translated at boundaries and mapped to HTTP once.

MetastackError
├── ConfigError            broken config file, env or flag (fails at start)
├── StoreError             the database failed or is unreachable (-> 503)
│   └── StoreUnavailable
├── NotFound               unknown object (-> 404)
├── Conflict               duplicate id / IP, password already set (-> 409)
├── InvalidInput           bad request data (-> 400)
├── ChangesPruned          the change feed no longer keeps the revisions asked for (-> 410)
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


class ChangesPruned(MetastackError):
    """The changes after `since` start past it: the ones in between were pruned (-> 410)."""

    def __init__(self, since: int, oldest_revision: int, revision: int) -> None:
        super().__init__(
            f"since: revision {since + 1} is no longer kept (the oldest kept is "
            f"{oldest_revision}); read everything again and follow from revision {revision}"
        )
        self.since = since
        self.oldest_revision = oldest_revision
        self.revision = revision
