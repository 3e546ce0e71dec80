"""Message ids handed out from blocks reserved in the store, so most messages cost no round trip."""

import contextlib

import anyio
from attrs import define, field

from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import Transaction, UnitOfWork


@define
class MessageIdAllocator:
    """Hands out ids from the current block. The sender that takes the block's middle id
    reserves the next one, so the others do not wait for the store; senders that run out
    while a reservation is under way wait for it and share it."""

    uow: UnitOfWork
    block_size: int = 1000
    _next: int = field(default=0, init=False)
    _end: int = field(default=0, init=False)
    _spare: tuple[int, int] | None = field(default=None, init=False)
    _reserving: anyio.Event | None = field(default=None, init=False)

    async def next(self) -> int:
        while self._next >= self._end:
            if self._spare is not None:
                (self._next, self._end), self._spare = self._spare, None
            else:
                await self._reserve()
        msg_id = self._next
        self._next += 1
        if self._end - self._next == self.block_size // 2 and self._spare is None:
            # Ahead of need: if the store is down now, the sender that runs out tries again.
            with contextlib.suppress(Unavailable):
                await self._reserve()
        return msg_id

    async def _reserve(self) -> None:
        if self._reserving is not None:
            await self._reserving.wait()
            return
        size = self.block_size

        def reserve(tx: Transaction) -> int:
            return tx.message_ids.reserve(size)

        self._reserving = done = anyio.Event()
        try:
            first = await self.uow.run(reserve)
            if self._next >= self._end:
                self._next, self._end = first, first + size
            else:
                self._spare = (first, first + size)
        finally:
            self._reserving = None
            done.set()
