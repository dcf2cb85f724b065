"""The demo's errors."""

from __future__ import annotations

from metastack.errors import MetastackError


class DemoError(MetastackError):
    """The demo cannot start or stop as asked."""


class DemoUsageError(DemoError):
    """The demo was asked for something it cannot do; nothing was created (exit status 2)."""
