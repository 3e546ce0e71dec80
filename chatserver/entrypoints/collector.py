"""Keeping CPython's garbage collections off the objects that live as long as sessions.

A full collection walks every tracked object, and a node with 10,000 sessions holds about a
million. Younger collections suffer too: an object that dies lowers the count that triggers
them, so while each request replaces old objects by new ones (as a connection waiting for its
next read does), the young generation grows without a collection, to tens of thousands of
objects, and is then walked in one go (docs/performance.md, `idle`). So `serve` freezes
(gc.freeze) every object alive, every second: frozen objects are never walked, and each
collection sees only what is newer than a second.

Each freeze is preceded by a collection of the young generations, so that what is already
garbage is not frozen. Objects frozen alive that become cyclic garbage later (a closed
connection leaves a few) are not collected while frozen: once the process holds twice as many
small objects (sys.getallocatedblocks, cheap, unlike counting the frozen set, which walks it)
as after the last thaw, and no sooner than THAW_AT_MOST_EVERY_SECONDS after it (or after
start-up), everything is thawed, collected in one full pass and frozen again. That pass stalls
the loop for about a second per million objects, so it is kept that rare; the garbage it finds
stays below the larger of what is alive and what ten minutes of closed connections left.
`serve --gc default` (CHATSERVER_GC=default, Config.gc) leaves the collector as CPython sets it
(for comparisons).
"""

import gc
import logging
import sys
import time

import anyio

log = logging.getLogger("chatserver.gc")

FREEZE_EVERY_SECONDS = 1.0
THAW_AT_MOST_EVERY_SECONDS = 600.0
LONG_PAUSE_SECONDS = 0.05  # collections that took longer are logged


async def keep_long_lived_frozen(
    *, freeze: bool = True, every_seconds: float = FREEZE_EVERY_SECONDS
) -> None:
    """Freeze what is alive, every second, for as long as the node runs; log long pauses
    (only that with freeze False)."""
    if freeze:
        # What start-up built (modules, the node) lives as long as the process. This one full
        # collection is part of starting, not a pause in serving: it is not logged.
        gc.collect()
        gc.freeze()
    gc.callbacks.append(_log_long_pauses)
    try:
        if freeze:
            await _freeze_periodically(every_seconds)
        else:
            await anyio.sleep_forever()
    finally:
        gc.callbacks.remove(_log_long_pauses)


async def _freeze_periodically(every_seconds: float) -> None:
    thawed_blocks, thawed_at = sys.getallocatedblocks(), time.monotonic()
    while True:
        await anyio.sleep(every_seconds)
        gc.collect(1)
        gc.freeze()
        now = time.monotonic()
        if (now - thawed_at >= THAW_AT_MOST_EVERY_SECONDS
                and sys.getallocatedblocks() > 2 * thawed_blocks):
            frozen = gc.get_freeze_count()
            gc.unfreeze()
            garbage = gc.collect()
            gc.freeze()
            thawed_blocks, thawed_at = sys.getallocatedblocks(), time.monotonic()
            log.info("gc: thawed %d objects, %d were garbage, in %.2f s", frozen, garbage,
                     thawed_at - now)


_started = 0.0


def _log_long_pauses(phase: str, info: dict[str, int]) -> None:
    """A gc callback: log each collection that stalled the event loop for long."""
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    took = time.perf_counter() - _started
    if took >= LONG_PAUSE_SECONDS:
        log.info("gc: a generation %d collection took %.3f s (%d objects collected)",
                 info["generation"], took, info["collected"])
