"""The history window: inbox entries older than it are deleted in the background, in small
batches, each its own short transaction, so no lock is held for long."""

import logging

import anyio
import anyio.lowlevel

from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import Clock, UnitOfWork

log = logging.getLogger("chatserver.pruning")

DAY_MS = 86_400_000
PRUNE_BATCH = 500
PRUNE_EVERY_SECONDS = 60.0


async def prune_once(
    uow: UnitOfWork, clock: Clock, history_days: int, *, batch: int = PRUNE_BATCH
) -> int:
    """Delete what has left the window, a batch per transaction; return how many entries
    went. With a window of 0 nothing goes by age: entries go once every device had them."""
    if history_days <= 0:
        return 0
    before_ms = clock.now_ms() - history_days * DAY_MS
    total = 0
    while True:
        gone = await uow.run(lambda tx: tx.inbox.prune(before_ms, batch))
        total += gone
        if gone < batch:
            return total
        await anyio.lowlevel.checkpoint()  # let the node's requests in between batches


async def prune_history(
    uow: UnitOfWork, clock: Clock, history_days: int, *, every_seconds: float = PRUNE_EVERY_SECONDS
) -> None:
    """Run for the node's lifetime: prune now and then."""
    while True:
        try:
            gone = await prune_once(uow, clock, history_days)
            if gone:
                log.info("pruned %d inbox entries older than %d days", gone, history_days)
        except Unavailable as error:
            log.warning("pruning postponed: %s", error)
        await anyio.sleep(every_seconds)
