"""Message ids come from blocks reserved in the store: senders that run out together share one
reservation, and the next block is reserved before the current one runs out."""

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import pytest

from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.application.message_ids import MessageIdAllocator
from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import Transaction

pytestmark = pytest.mark.anyio
T = TypeVar("T")


class SlowCountingUnitOfWork(MemoryUnitOfWork):
    """Counts transactions, each taking a while (as a database in a worker thread does)."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0

    async def run(self, work: Callable[[Transaction], T]) -> T:
        self.transactions += 1
        await anyio.sleep(0.01)
        return await super().run(work)


async def ids_at_once(ids: MessageIdAllocator, senders: int) -> list[int]:
    """What many senders asking at the same time get."""
    got: list[int] = []

    async def send() -> None:
        got.append(await ids.next())

    async with anyio.create_task_group() as tg:
        for _ in range(senders):
            tg.start_soon(send)
    return got


async def test_senders_that_run_out_together_share_one_reservation() -> None:
    uow = SlowCountingUnitOfWork()
    ids = MessageIdAllocator(uow, block_size=100)
    got = await ids_at_once(ids, 140)
    assert len(set(got)) == 140 and min(got) > 0
    # The first block, and the next one reserved half-way through it: nothing wasted.
    assert uow.transactions == 2


async def test_ids_keep_rising_across_blocks() -> None:
    ids = MessageIdAllocator(SlowCountingUnitOfWork(), block_size=10)
    got = [await ids.next() for _ in range(35)]
    assert got == sorted(got) and len(set(got)) == 35


async def test_only_the_middle_sender_waits_for_the_next_block() -> None:
    uow = SlowCountingUnitOfWork()
    ids = MessageIdAllocator(uow, block_size=10)
    await ids.next()
    assert uow.transactions == 1
    for _ in range(4):
        await ids.next()  # ids 2..5 of 10: the fifth leaves half the block
    assert uow.transactions == 2
    for _ in range(5):
        with anyio.fail_after(0.005):  # the rest of the block, without the store
            await ids.next()
    with anyio.fail_after(0.005):  # and the spare block's first id: reserved already
        await ids.next()
    assert uow.transactions == 2


class FailingUnitOfWork(SlowCountingUnitOfWork):
    """A store that goes down after its first transaction."""

    async def run(self, work: Callable[[Transaction], T]) -> T:
        if self.transactions >= 1:
            self.transactions += 1
            raise Unavailable()
        return await super().run(work)


async def test_a_store_down_half_way_through_a_block_fails_no_message_that_has_an_id() -> None:
    ids = MessageIdAllocator(FailingUnitOfWork(), block_size=10)
    got = [await ids.next() for _ in range(10)]  # the middle one tried to reserve, and failed
    assert len(set(got)) == 10
    with pytest.raises(Unavailable):
        await ids.next()  # out of ids: now the failure is the sender's


async def test_blocks_grow_when_senders_run_out_while_one_is_being_reserved() -> None:
    uow = SlowCountingUnitOfWork()
    ids = MessageIdAllocator(uow, block_size=10)
    got = await ids_at_once(ids, 40)  # more at once than half a block: they run out, and wait
    reserved = uow.transactions
    got += [await ids.next() for _ in range(200)]
    # Blocks of 10 would take 20 transactions for these 200 ids; larger ones take fewer.
    assert uow.transactions - reserved <= 5
    assert len(set(got)) == 240 and got[40:] == sorted(got[40:])


async def test_take_ahead_hands_the_next_blocks_reservation_to_a_task_instead_of_waiting() -> None:
    """The chat that takes a block's middle id is not held up: it gets its id at once, and the
    reservation of the next block runs in a task of its own; the spare block is used once the
    current one is used up, still without waiting."""
    uow = SlowCountingUnitOfWork()
    ids = MessageIdAllocator(uow, block_size=10)
    first = await ids.next()
    assert uow.transactions == 1
    started: list[object] = []
    async with anyio.create_task_group() as tg:

        def run(reserving: Any) -> None:
            started.append(reserving)
            tg.start_soon(lambda: reserving)

        taken = [ids.take_ahead(run) for _ in range(9)]  # the rest of the block: no waiting
        assert taken == list(range(first + 1, first + 10))
        assert len(started) == 1  # the middle id started one reservation, and only one
        assert ids.take_ahead(run) is None  # used up, the spare not there yet: next() waits
    # The reservation has landed: the spare block's ids come without waiting, in order.
    following = ids.take_ahead(run)
    assert following is not None and following > taken[-1]
    assert ids.take_ahead(run) == following + 1 and uow.transactions == 2


async def test_a_reservation_ahead_that_fails_fails_no_message() -> None:
    ids = MessageIdAllocator(FailingUnitOfWork(), block_size=10)
    await ids.next()
    async with anyio.create_task_group() as tg:
        got = [ids.take_ahead(lambda c: tg.start_soon(lambda: c)) for _ in range(9)]
    assert None not in got and len(set(got)) == 9
    with pytest.raises(Unavailable):
        await ids.next()  # out of ids: now the failure is the sender's
