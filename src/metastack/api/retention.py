"""A bounded change feed: every API worker prunes changes older than `change_retention`.

Pruning is safe in every worker of every node at once: on PostgreSQL one holds an
advisory lock while the others skip; on SQLite the deletes queue like any write and
find nothing left. A follower that asks for a pruned revision gets 410 and resyncs.
"""

from __future__ import annotations

import asyncio
import logging
import random

from metastack.errors import StoreError
from metastack.store.sql import SqlStore

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
MAX_INTERVAL = 300.0


def prune_interval(retention: float) -> float:
    """How often to prune: a tenth of the retention, between 1 s and 5 min."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, retention / 10))


async def prune_forever(store: SqlStore, retention: float) -> None:
    """Prune now and then until cancelled; a failure waits for the next turn."""
    interval = prune_interval(retention)
    # Spread the workers of all nodes over the interval rather than pruning in step.
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        try:
            pruned = await asyncio.to_thread(store.prune_changes, retention)
        except StoreError as exc:
            log.warning("pruning the change feed failed: %s", exc)
        else:
            if pruned:
                log.info("pruned %d changes older than %.0f s from the feed", pruned, retention)
        await asyncio.sleep(interval)
