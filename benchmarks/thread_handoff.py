"""`python -m benchmarks.thread_handoff`: what handing the password hash to a worker thread
costs the server, apart from the hash itself.

A login verifies its password with scrypt in a worker thread (chatserver/adapters/security.py),
so that the event loop goes on serving others meanwhile. The `login` scenario's "hash
excluded" figure subtracts the hash's CPU but not the hand-off: waking a worker thread, the
GIL passing to it and back, and the event loop being woken with the result. This times, in one
process with the process's CPU clock, the same scrypt call (at the benchmark's cheap cost,
n = 2) run inline, through anyio.to_thread.run_sync, through a concurrent.futures executor
and through the server's own `WorkerThreads`, C calls at a time; the difference to inline is
the hand-off.
"""

import argparse
import asyncio
import concurrent.futures
import hashlib
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread

from chatserver.adapters.worker_threads import WorkerThreads, run_in


def derive() -> bytes:
    return hashlib.scrypt(b"bench-pass", salt=b"s" * 16, n=2, r=8, p=1, dklen=32)


async def timed(call: Callable[[], Awaitable[object]], count: int, at_once: int) -> float:
    """CPU µs of the whole process per call."""
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            await call()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    return (time.process_time() - started) / count * 1e6


async def main(count: int, at_once: int, rounds: int) -> None:
    limiter = anyio.CapacityLimiter(2)  # as ScryptHasher's
    executor = concurrent.futures.ThreadPoolExecutor(2)
    workers = WorkerThreads(2)  # what the server uses (adapters/worker_threads.py)
    loop = asyncio.get_running_loop()

    async def inline() -> bytes:
        return derive()

    async def anyio_thread() -> bytes:
        return await anyio.to_thread.run_sync(derive, limiter=limiter)

    async def executor_thread() -> bytes:
        return await loop.run_in_executor(executor, derive)

    async def own_threads() -> bytes:
        return await run_in(workers, derive)

    ways = {"inline": inline, "anyio.to_thread": anyio_thread, "executor": executor_thread,
            "WorkerThreads": own_threads}
    best = {name: min([await timed(call, count, at_once) for _ in range(rounds)])
            for name, call in ways.items()}
    print(f"scrypt n=2, {count:,} calls, {at_once} at a time, best of {rounds} rounds "
          "(process CPU µs per call):")
    for name, us in best.items():
        extra = "" if name == "inline" else f"  hand-off {us - best['inline']:,.0f}"
        print(f"  {name:16s} {us:7.1f}{extra}")
    executor.shutdown()
    workers.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--at-once", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.at_once, args.rounds))
