"""Message ids handed out from blocks reserved in the store, so most messages cost no round trip."""

from attrs import define, field

from chatserver.domain.ports import Transaction, UnitOfWork


@define
class MessageIdAllocator:
    uow: UnitOfWork
    block_size: int = 1000
    _next: int = field(default=0, init=False)
    _end: int = field(default=0, init=False)

    async def next(self) -> int:
        if self._next >= self._end:
            await self._reserve()
        msg_id = self._next
        self._next += 1
        return msg_id

    async def _reserve(self) -> None:
        size = self.block_size

        def reserve(tx: Transaction) -> int:
            return tx.message_ids.reserve(size)

        first = await self.uow.run(reserve)
        # Another task may have refilled while this one waited; keep whichever is fresher.
        if self._next >= self._end:
            self._next, self._end = first, first + size
