"""Message ids handed out from blocks reserved in the store, so most messages cost no round trip."""

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from attrs import define, field

from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import Transaction, UnitOfWork

log = logging.getLogger("chatserver.message_ids")

# How far blocks may grow past block_size when senders keep running out (see _reserve).
MAX_GROWTH = 64


@define
class MessageIdAllocator:
    """Hands out ids from the current block. The sender that takes the block's middle id
    reserves the next one, so the others do not wait for the store; senders that run out
    while a reservation is under way wait for it and share it, and the blocks reserved after
    that are twice as large (up to MAX_GROWTH times block_size): half a block was not enough
    for the messages that came while one was reserved."""

    uow: UnitOfWork
    block_size: int = 1000
    _next: int = field(default=0, init=False)
    _end: int = field(default=0, init=False)
    # The current block's middle: when it is the next id, the next block is reserved.
    _middle: int = field(default=0, init=False)
    _spare: tuple[int, int] | None = field(default=None, init=False)
    _reserving: anyio.Event | None = field(default=None, init=False)
    _size: int = field(default=0, init=False)  # of the next block reserved; 0: block_size
    _ran_out: bool = field(default=False, init=False)

    def take(self) -> int | None:
        """The next id, when one is at hand and taking it starts no reservation; else None,
        and next() is the way (the common case costs no coroutine this way)."""
        msg_id = self._next
        if msg_id >= self._end or (msg_id + 1 == self._middle and self._spare is None):
            return None
        self._next = msg_id + 1
        return msg_id

    def take_ahead(self, run: Callable[[Coroutine[Any, Any, None]], None]) -> int | None:
        """take(), also when the id taken is the one that starts the next block's reservation:
        the reservation is then handed to run (which starts it in a task of its own) instead of
        being awaited by the sender, so the chat that took the middle id is not held up (nor
        the chats behind it on its connection). None when no id is at hand."""
        if self._next >= self._end:
            if self._spare is None:
                return None
            self._use(*self._spare)  # as next() does
            self._spare = None
        msg_id = self._next
        self._next = msg_id + 1
        if self._next == self._middle and self._spare is None and self._reserving is None:
            run(self._reserve_ahead())
        return msg_id

    async def _reserve_ahead(self) -> None:
        # If the store is down now (or the node stopping), the sender that runs out tries
        # again (next()) and is told.
        try:
            await self._reserve()
        except Exception as error:
            log.info("reserving message ids ahead of need failed: %r", error)

    async def next(self) -> int:
        while self._next >= self._end:
            if self._spare is not None:
                self._use(*self._spare)
                self._spare = None
            else:
                await self._reserve()
        msg_id = self._next
        self._next += 1
        if self._next == self._middle and self._spare is None:
            # Ahead of need: if the store is down now, the sender that runs out tries again.
            with contextlib.suppress(Unavailable):
                await self._reserve()
        return msg_id

    def _use(self, first: int, end: int) -> None:
        self._next, self._end = first, end
        self._middle = end - (end - first) // 2

    async def _reserve(self) -> None:
        if self._reserving is not None:
            self._ran_out = True
            await self._reserving.wait()
            return
        size = self._size or self.block_size

        def reserve(tx: Transaction) -> int:
            return tx.message_ids.reserve(size)

        self._reserving = done = anyio.Event()
        try:
            first = await self.uow.run(reserve)
            if self._next >= self._end:
                self._use(first, first + size)
            else:
                self._spare = (first, first + size)
        finally:
            self._reserving = None
            if self._ran_out:
                self._ran_out = False
                self._size = min(size * 2, self.block_size * MAX_GROWTH)
            done.set()
