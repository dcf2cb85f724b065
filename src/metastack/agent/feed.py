"""Background task following the control API's change feed into the lookup cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from metastack.agent.cache import Change, LookupCache
from metastack.agent.control import ChangePage, ControlClient
from metastack.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

# Extra seconds a long-poll may take past its wait before the feed counts as silent.
FEED_GRACE = 5.0
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


def next_since(cache: LookupCache, since: int, page: ChangePage, now: float) -> int:
    """Apply one feed page to the cache; returns the revision to ask from next.

    Revisions are contiguous (every write bumps them by one), so a page whose first
    change is not `since + 1`, or a current revision behind ours (the control API
    restarted on a fresh counter), means changes were lost: drop everything.
    """
    if not page.changes:
        if page.revision != since:
            cache.resync(now)
        return page.revision
    if page.changes[0].revision != since + 1:
        cache.resync(now)
    else:
        cache.apply(page.changes, now)
    # A page may be cut short (a limit on its size): continue after its last change.
    return page.changes[-1].revision


async def follow_changes(
    control: ControlClient,
    cache: LookupCache,
    wait: int,
    clock: Callable[[], float] = time.monotonic,
    on_changes: Callable[[Sequence[Change]], None] | None = None,
) -> None:
    """Run until cancelled: keep the cache in step with the feed, or mark it not live.
    `on_changes` hears every page of changes once the cache has applied it."""
    since: int | None = None
    poll_wait = 0
    failures = 0
    while True:
        try:
            if since is None:
                # First contact: nothing is cached yet, so only the current revision matters.
                page = await control.changes(0, 0, timeout=wait + FEED_GRACE)
                cache.resync(clock())
                since = page.revision
            else:
                page = await control.changes(since, poll_wait, timeout=wait + FEED_GRACE)
                since = next_since(cache, since, page, clock())
                if on_changes is not None and page.changes:
                    on_changes(page.changes)
            # Behind the current revision (a cut-short page): ask again without waiting.
            poll_wait = wait if since >= page.revision else 0
            cache.set_live(True, clock())
            if failures:
                log.info("change feed is back at revision %d; lookup cache in use", since)
            failures = 0
        except UpstreamUnavailable as exc:
            if failures == 0:
                log.warning("change feed unavailable, lookup cache bypassed: %s", exc)
            cache.set_live(False, clock())
            poll_wait = 0  # the first answer after an outage should not wait for a change
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
            failures += 1
