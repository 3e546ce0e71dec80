"""Blocking work (a password hash, a SQLite transaction) in a thread pool of the adapter's own.

Handing a call to a `concurrent.futures` pool and taking its result back costs the event
loop's thread about half of what `anyio.to_thread.run_sync` does (its capacity limiter and
per-call bookkeeping): `python -m benchmarks.thread_handoff` measures both. A pool of one
thread runs its calls one at a time in the order given, as a capacity limiter of 1 did.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

T = TypeVar("T")


async def run_in(pool: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    """call() in one of pool's threads. A caller cancelled while call waits for its thread
    takes it out of the queue (nothing was done); cancelled once call is running, it waits
    for call to finish before it goes (as run_sync does unless told to abandon it): what
    call holds (a transaction, a hashing slot) is given back only once it is done."""
    future = pool.submit(call)
    try:
        return await asyncio.wrap_future(future)
    except BaseException:
        if not future.cancel() and not future.done():
            running = asyncio.wrap_future(future)
            with anyio.CancelScope(shield=True):
                await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # its outcome is the caller's cancellation: not logged
        raise
