"""adapters.worker_threads.run_in: work in an adapter's own threads, in order, and what a
cancelled caller leaves behind (nothing, or a finished call)."""

import threading

import anyio
import pytest

from chatserver.adapters.worker_threads import WorkerThreads, run_in

pytestmark = pytest.mark.anyio


async def test_calls_run_in_order_one_at_a_time_and_return_or_raise() -> None:
    pool = WorkerThreads(1)
    ran: list[int] = []

    def step(i: int) -> int:
        ran.append(i)
        return i * 10

    results: list[int] = []
    async with anyio.create_task_group() as tasks:
        for i in range(20):
            async def one(i: int = i) -> None:
                results.append(await run_in(pool, lambda: step(i)))
            tasks.start_soon(one)
    assert ran == list(range(20))
    assert sorted(results) == [i * 10 for i in range(20)]

    def fail() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        await run_in(pool, fail)
    pool.shutdown()


async def test_a_cancelled_caller_leaves_a_waiting_call_undone_and_a_running_one_done() -> None:
    pool = WorkerThreads(1)
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def running() -> None:
        started.set()
        release.wait(5)
        finished.append("running")

    def queued() -> None:
        finished.append("queued")

    async def first() -> None:
        await run_in(pool, running)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            tasks.start_soon(run_in, pool, queued)
            await anyio.to_thread.run_sync(started.wait, 5)
            scope.cancel()
            # The running call is waited for: the cancelled task group cannot end before it.
            threading.Timer(0.2, release.set).start()
    assert finished == ["running"]  # done before the cancelled callers went; queued never ran
    pool.shutdown()
    assert finished == ["running"]
