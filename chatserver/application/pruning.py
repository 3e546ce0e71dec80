"""The history window: inbox entries older than it are deleted in the background, in small
batches, each its own short transaction, so no lock is held for long."""

import logging

import anyio
import anyio.lowlevel

from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import Clock, FileStore, UnitOfWork

log = logging.getLogger("chatserver.pruning")

DAY_MS = 86_400_000
PRUNE_BATCH = 500
PRUNE_EVERY_SECONDS = 60.0
# A file no message refers to is kept this long after it was asked for (its upload, then
# the chat that carries it, come within it); a reference is checked this long after it was
# made (its message is stored right after it).
UNSENT_FILE_MS = DAY_MS
REFERENCE_SETTLE_MS = 60_000


async def collect_files(uow: UnitOfWork, clock: Clock, store: FileStore) -> int:
    """Forget files that no kept message refers to any more, rows and bytes; return how many
    stored contents went."""
    now = clock.now_ms()
    unused = await uow.run(
        lambda tx: tx.files.collect(now - REFERENCE_SETTLE_MS, now - UNSENT_FILE_MS)
    )
    for sha256 in unused:
        await store.delete(sha256)
    return len(unused)


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
    uow: UnitOfWork, clock: Clock, history_days: int, *, every_seconds: float = PRUNE_EVERY_SECONDS,
    files: FileStore | None = None,
) -> None:
    """Run for the node's lifetime: prune now and then, and with it the files no kept message
    refers to any more."""
    while True:
        try:
            gone = await prune_once(uow, clock, history_days)
            if gone:
                log.info("pruned %d inbox entries older than %d days", gone, history_days)
            if files is not None:
                removed = await collect_files(uow, clock, files)
                if removed:
                    log.info("removed %d files no kept message refers to", removed)
        except Unavailable as error:
            log.warning("pruning postponed: %s", error)
        await anyio.sleep(every_seconds)
