"""Blocking work (a password hash, a SQLite transaction) in a thread pool of the adapter's own.

`WorkerThreads` is a queue and a few threads, nothing else: a call handed to it comes back to
the event loop as the result of an asyncio future, set by one `call_soon_threadsafe`. That
costs the event loop's thread a fraction of `anyio.to_thread.run_sync` (its capacity limiter
and per-call bookkeeping) and about half of a `concurrent.futures` pool (a Future with its own
Condition per call, chained to an asyncio future by callbacks): `python -m
benchmarks.thread_handoff` measures them. A pool of one thread runs its calls one at a time in
the order given, as a capacity limiter of 1 did.
"""

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


class _Job(Generic[T]):
    """One call: whoever takes the claim first decides it, the worker (it runs) or a
    cancelled caller (it never does). list.pop is one step under the GIL."""

    __slots__ = ("call", "claim", "finished", "future", "loop", "waiter")

    def __init__(self, call: Callable[[], T], loop: asyncio.AbstractEventLoop) -> None:
        self.call = call
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        self.claim = [True]
        self.finished = False
        self.waiter: asyncio.Future[None] | None = None  # a cancelled caller waiting

    def done(self, ok: bool, value: Any) -> None:
        """In the event loop's thread: the call returned value (ok) or raised it."""
        self.finished = True
        future = self.future
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _work(jobs: "SimpleQueue[_Job[Any] | None]") -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            job.claim.pop()
        except IndexError:
            continue  # its caller was cancelled before it started
        try:
            result = job.call()
        except BaseException as error:  # handed to the caller, as a thread pool's future does
            outcome: tuple[bool, Any] = (False, error)
        else:
            outcome = (True, result)
        job.call = _done  # let go of what the call held
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            job.loop.call_soon_threadsafe(job.done, *outcome)
        del job, outcome


def _done() -> None:
    raise AssertionError("a call ran twice")


def _stop(jobs: "SimpleQueue[_Job[Any] | None]", threads: int) -> None:
    for _ in range(threads):
        jobs.put(None)


class WorkerThreads:
    """threads worker threads (started at the first call), named name_0, name_1, ..."""

    def __init__(self, threads: int, name: str = "worker") -> None:
        self._jobs: SimpleQueue[_Job[Any] | None] = SimpleQueue()
        self._count = threads
        self._name = name
        self._started = False
        self._shut = False
        # A pool dropped without shutdown() lets its threads go.
        self._finalizer = weakref.finalize(self, _stop, self._jobs, threads)

    def _start(self) -> None:
        self._started = True
        for index in range(self._count):
            threading.Thread(
                target=_work, args=(self._jobs,), name=f"{self._name}_{index}", daemon=True
            ).start()

    def put(self, job: "_Job[Any]") -> None:
        if self._shut:
            raise RuntimeError("cannot run a call after shutdown")
        if not self._started:
            self._start()
        self._jobs.put(job)

    def shutdown(self, wait: bool = False) -> None:
        """No more calls; the threads end once what is queued is done (wait is not
        supported: nothing here waits for a thread)."""
        self._shut = True
        self._finalizer()


async def run_in(pool: WorkerThreads, call: Callable[[], T]) -> T:
    """call() in one of pool's threads. A caller cancelled while call waits for its thread
    takes it out of the queue (nothing was done); cancelled once call is running, it waits
    for call to finish before it goes (as run_sync does unless told to abandon it): what
    call holds (a transaction, a hashing slot) is given back only once it is done."""
    job: _Job[T] = _Job(call, asyncio.get_running_loop())
    pool.put(job)
    try:
        return await job.future
    except BaseException:
        if not job.finished:
            try:
                job.claim.pop()  # never started: it never will
            except IndexError:
                waiter = job.waiter = job.loop.create_future()
                with anyio.CancelScope(shield=True):
                    await waiter
        raise
