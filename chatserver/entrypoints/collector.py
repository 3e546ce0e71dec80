"""Keeping CPython's full garbage collections off the objects that live as long as sessions.

A full collection walks every tracked object. A node with 10,000 sessions holds about a
million, so each full pass stalls the event loop for a second or more, and the leftovers of
ordinary requests set one off every few seconds (docs/performance.md, `idle`). So `serve`
freezes (gc.freeze) what has survived, every few seconds: frozen objects are never walked,
and a full pass only sees what is newer than the last freeze.

Frozen objects that later become cyclic garbage (a closed connection leaves a few) are not
collected while frozen. So once the frozen set has doubled since it was last thawed, and not
sooner than THAW_AT_MOST_EVERY_SECONDS after that, it is thawed, collected in one full pass
and frozen again: that garbage stays below what is alive, at the price of one pause that rare.
CHATSERVER_GC=default leaves the collector as CPython sets it (for comparisons).
"""

import gc
import logging
import os
import time

import anyio

log = logging.getLogger("chatserver.gc")

FREEZE_EVERY_SECONDS = 10.0
THAW_AT_MOST_EVERY_SECONDS = 600.0
LONG_PAUSE_SECONDS = 0.05  # collections that took longer are logged


def enabled() -> bool:
    return os.environ.get("CHATSERVER_GC", "freeze") != "default"


async def keep_long_lived_frozen(
    *,
    freeze: bool = True,
    every_seconds: float = FREEZE_EVERY_SECONDS,
    thaw_at_most_every_seconds: float = THAW_AT_MOST_EVERY_SECONDS,
) -> None:
    """Freeze what survived, periodically, for as long as the node runs; log long pauses
    (only that with freeze False)."""
    gc.callbacks.append(_log_long_pauses)
    try:
        if freeze:
            await _freeze_periodically(every_seconds, thaw_at_most_every_seconds)
        else:
            await anyio.sleep_forever()
    finally:
        gc.callbacks.remove(_log_long_pauses)


async def _freeze_periodically(every_seconds: float, thaw_at_most_every_seconds: float) -> None:
    gc.collect()
    gc.freeze()  # what start-up built (modules, the node) lives as long as the process
    thawed_size, thawed_at = gc.get_freeze_count(), time.monotonic()
    while True:
        await anyio.sleep(every_seconds)
        gc.freeze()
        frozen = gc.get_freeze_count()
        now = time.monotonic()
        if frozen > 2 * thawed_size and now - thawed_at >= thaw_at_most_every_seconds:
            gc.unfreeze()
            garbage = gc.collect()
            gc.freeze()
            thawed_size, thawed_at = gc.get_freeze_count(), time.monotonic()
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
