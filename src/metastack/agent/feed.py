"""The agent's side of the change feed: the shared follower, wired to the lookup cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from metastack.agent.cache import Change, LookupCache
from metastack.agent.control import ControlClient
from metastack.client.feed import Follower


def follow_changes(
    control: ControlClient,
    cache: LookupCache,
    wait: float,
    clock: Callable[[], float] = time.monotonic,
    on_changes: Callable[[Sequence[Change]], None] | None = None,
) -> Follower:
    """A follower that keeps the cache in step with the feed, or marks it not live.

    A resync (first contact, lost or pruned revisions) drops the whole cache and refuses
    every lookup in flight; `on_changes` hears every page once the cache applied it.
    """

    def applied(changes: Sequence[Change]) -> None:
        cache.apply(changes, clock())
        if on_changes is not None:
            on_changes(changes)

    return Follower(
        control,
        wait,
        on_resync=lambda revision: cache.resync(clock()),
        on_changes=applied,
        on_live=lambda live: cache.set_live(live, clock()),
        name="lookup cache",
    )
