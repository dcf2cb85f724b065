"""Following the control API's change feed: the one loop the agent and the netagent share.

A `Follower` long-polls `GET /v1/changes` from the last revision it applied and hands
each page to its owner, or tells the owner to resync (forget what it derived from the
control API and read it again) whenever it cannot account for every revision:

- first contact, or after any failure: only the current revision matters from then on;
- a gap (the first change is not `since + 1`) or a revision behind ours (the control
  API's store was replaced);
- 410 (`ChangesPruned`): the revisions after ours are no longer kept.

So an owner never misses an invalidation: it either applies every change in order or
starts over from a revision it has read everything at.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from metastack.errors import ChangesPruned, UpstreamUnavailable

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Extra seconds a long poll may take past its wait before the feed counts as silent.
FEED_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Change:
    """One change-feed entry, as far as followers need it."""

    revision: int
    resource: str
    resource_id: str
    network_id: str = ""
    instance_id: str = ""
    project_id: str = ""


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One answer of the change feed: the current revision and changes after `since`."""

    revision: int
    changes: tuple[Change, ...]


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def parse_changes(document: dict[str, Any]) -> ChangePage:
    """A page of `GET /v1/changes` (missing text fields read as empty)."""
    changes = tuple(
        Change(
            revision=int(item["revision"]),
            resource=_text(item, "resource"),
            resource_id=_text(item, "resource_id"),
            network_id=_text(item, "network_id"),
            instance_id=_text(item, "instance_id"),
            project_id=_text(item, "project_id"),
        )
        for item in document.get("changes") or []
    )
    return ChangePage(int(document["revision"]), changes)


def parse_pruned(since: int, document: Any) -> ChangesPruned:
    """The 410 answer of `GET /v1/changes?since=N`; UpstreamUnavailable if malformed."""
    try:
        return ChangesPruned(since, int(document["oldest_revision"]), int(document["revision"]))
    except (KeyError, TypeError, ValueError) as exc:
        message = f"control API: malformed 410 of the change feed: {exc!r}"
        raise UpstreamUnavailable(message) from exc


class FeedSource(Protocol):
    """Reads one page of the feed: ChangesPruned on 410, UpstreamUnavailable on failure."""

    async def changes(self, since: int, wait: float, timeout: float) -> ChangePage: ...


class Follower:
    """Follows the feed until cancelled, calling its owner back (see the module docstring).

    `on_resync(revision)`: forget everything; the feed continues after `revision`.
    `on_changes(changes)`: apply these, in order (never empty).
    `on_live(live)`: the feed answers (again), or it failed; after a failure the next
    answer comes with a resync.
    """

    def __init__(
        self,
        source: FeedSource,
        wait: float,
        *,
        on_resync: Callable[[int], None],
        on_changes: Callable[[Sequence[Change]], None],
        on_live: Callable[[bool], None] = lambda live: None,
        name: str = "follower",
    ) -> None:
        self._source = source
        self._wait = wait
        self._on_resync = on_resync
        self._on_changes = on_changes
        self._on_live = on_live
        self._name = name
        self.since: int | None = None  # the revision everything up to has been applied
        self.resyncs = 0

    async def run(self) -> None:
        """Follow until cancelled."""
        poll_wait = 0.0
        failures = 0
        while True:
            try:
                page = await self._next_page(poll_wait)
            except UpstreamUnavailable as exc:
                if failures == 0:
                    log.warning("change feed unavailable (%s): %s", self._name, exc)
                self.since = None  # start over: changes may be missed meanwhile
                self._on_live(False)
                poll_wait = 0.0
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                continue
            if failures:
                log.info("change feed is back at revision %s (%s)", self.since, self._name)
            failures = 0
            self._on_live(True)
            # Behind the current revision (a page cut short, a resync): ask again at once.
            behind = page is None or (self.since or 0) < page.revision
            poll_wait = 0.0 if behind else self._wait

    async def _next_page(self, poll_wait: float) -> ChangePage | None:
        """Fetch and apply one page; None after a 410 (resynced, nothing to wait for)."""
        timeout = poll_wait + FEED_GRACE
        since = self.since
        try:
            if since is None:  # first contact: only the current revision matters
                page = await self._source.changes(0, 0, timeout)
                self._resync(page.revision)
                return page
            page = await self._source.changes(since, poll_wait, timeout)
        except ChangesPruned as exc:
            log.warning("change feed (%s): %s", self._name, exc)
            self._resync(exc.revision)
            return None
        self.since = self._apply(since, page)
        return page

    def _resync(self, revision: int) -> None:
        self.resyncs += 1
        self.since = revision
        self._on_resync(revision)

    def _apply(self, since: int, page: ChangePage) -> int:
        """Apply one page; the revision to continue after. Revisions are contiguous, so a
        first change past `since + 1`, or no change but another revision, means loss."""
        if not page.changes:
            if page.revision != since:
                self._resync(page.revision)
            return page.revision
        if page.changes[0].revision != since + 1:
            self._resync(page.changes[-1].revision)
        else:
            self._on_changes(page.changes)
        # A page may be cut short (a limit on its size): continue after its last change.
        return page.changes[-1].revision
