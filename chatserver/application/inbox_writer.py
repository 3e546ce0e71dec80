"""Group commit: what the node's use cases want kept in inboxes (and devices' marks) is
written in one transaction per batch, never a transaction per message.

The first writer of a batch leads it: it waits for the batch before to be written, lets the
current loop turn's other writers join, then writes the batch. Under load a batch grows while
the one before it is being written, so throughput grows with load instead of paying a commit
per message. Right after the commit, while no other batch can commit, the leader pushes each
entry to its user's sessions on this node, so that this node's pushes follow pos order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import anyio.lowlevel
from attrs import Factory, define, field

from chatserver.domain.errors import ChatError, Unavailable, UnknownUser
from chatserver.domain.messages import Delivery
from chatserver.domain.ports import Clock, DeviceMark, Transaction, UnitOfWork

log = logging.getLogger("chatserver.inbox")

# Users known to exist, so a message to them needs no check in the transaction.
KNOWN_USERS_KEPT = 100_000


@define(eq=False)
class InboxWrite:
    """Entries to keep for one request, and what came of it."""

    entries: Sequence[tuple[int, Delivery]]
    # A user the request names, who must exist (a one-to-one recipient): else UnknownUser.
    check_user: int | None = None
    # The sending session, which has its own copy already (its ACK carries the pos).
    own: object | None = None
    positions: list[int] = Factory(list)
    error: ChatError | None = None
    # Called right after the commit (or with error set, when it failed) instead of waking a
    # coroutine (join_gathering); what it returns, if anything, the batch's writer awaits.
    then: Callable[[InboxWrite], Coroutine[Any, Any, None] | None] | None = None
    # Where then hands the positions or the error on (the `then` of Router.deliver's caller):
    # kept here, so that no closure is made per message.
    delivered: Callable[[Any], Coroutine[Any, Any, None] | None] | None = None


@define(eq=False)
class _Batch:
    writes: list[InboxWrite] = Factory(list)
    marks: dict[tuple[int, str], DeviceMark] = Factory(dict)
    read: dict[int, int] = Factory(dict)
    # The read positions kept (those that were higher than before), by user.
    raised_read: dict[int, int] = Factory(dict)
    done: anyio.Event = Factory(anyio.Event)
    error: BaseException | None = None
    callbacks: int = 0  # writes with a then
    # What those callbacks left to do (pushing to other nodes, say), awaited by the leader.
    rest: list[Coroutine[Any, Any, None]] = Factory(list)


@define(eq=False)
class InboxWriter:
    uow: UnitOfWork
    clock: Clock
    # Called with each write, in order, right after its batch committed.
    committed: Callable[[InboxWrite], None]
    # 0: the history window is off: what every device of a user has had is deleted.
    history_days: int = 30
    batches: int = 0
    _batch: _Batch | None = None
    # Taken at once when free: _lead lets the loop turn's writes join right after anyway.
    _lock: anyio.Lock = field(factory=lambda: anyio.Lock(fast_acquire=True))
    _known: set[int] = Factory(set)
    # Observes each batch's size (entries), for metrics.
    observe: Callable[[int], None] | None = None
    # Webhook outbox rows for the deliveries of a batch, written in its transaction (None: off).
    webhook_rows: Callable[[list[Delivery]], list[tuple[str, str]]] | None = None
    # Called with how many webhook rows a batch wrote, after it committed.
    webhooks_written: Callable[[int], None] | None = None

    def known(self, user_id: int) -> None:
        """user_id exists (seen online, say): a message to them needs no check."""
        if len(self._known) >= KNOWN_USERS_KEPT:
            self._known.clear()
        self._known.add(user_id)

    def forget(self, user_id: int) -> None:
        """user_id no longer exists (the account was deleted): check again."""
        self._known.discard(user_id)

    async def append(self, write: InboxWrite) -> list[int]:
        """Keep write's entries at their users' next positions; return the positions."""
        return await self.enqueue(write)

    def enqueue(self, write: InboxWrite) -> Coroutine[Any, Any, list[int]]:
        """append(write), whose place in the queue is taken now, before the first await: what
        is enqueued first takes the lower positions. Await what it returns."""
        batch, leader = self._join()
        batch.writes.append(write)
        return self._appended(write, batch, leader)

    async def _appended(self, write: InboxWrite, batch: _Batch, leader: bool) -> list[int]:
        await self._settle(batch, leader)
        if write.error is not None:
            raise write.error
        return write.positions

    async def set_mark(self, user_id: int, device: str, mark: DeviceMark) -> None:
        batch, leader = self._join()
        batch.marks[(user_id, device)] = mark
        await self._settle(batch, leader)

    async def set_read(self, user_id: int, pos: int) -> int | None:
        """Keep pos (at most the newest pos) as read; return what was kept if it was higher
        than before, else None."""
        batch, leader = self._join()
        batch.read[user_id] = max(pos, batch.read.get(user_id, 0))
        await self._settle(batch, leader)
        if batch.read[user_id] != pos:
            return None  # a higher one in the same batch won
        return batch.raised_read.get(user_id)

    @property
    def gathering(self) -> bool:
        """A batch is being gathered (join_gathering would take a write)."""
        return self._batch is not None

    def join_gathering(self, write: InboxWrite) -> bool:
        """Add write, whose then is set, to the batch being gathered, if there is one (its
        leader will write it): no coroutine waits for it. False (nothing done) if there is
        none: append() is the way then."""
        batch = self._batch
        if batch is None:
            return False
        batch.writes.append(write)
        batch.callbacks += 1
        return True

    def _join(self) -> tuple[_Batch, bool]:
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            return batch, True
        return batch, False

    def open_batch(self) -> Coroutine[Any, Any, None] | None:
        """Start gathering a batch if none is, and return its leader's work (waiting for the
        batch before, letting this loop turn's writes join, writing), for the caller to run
        in a task that nothing cancels; None (nothing done) if a batch is gathering already."""
        if self._batch is not None:
            return None
        batch = self._batch = _Batch()
        return self._lead(batch)

    async def _lead(self, batch: _Batch) -> None:
        # The batch is written whatever becomes of the request that started it.
        with anyio.CancelScope(shield=True):
            async with self._lock:  # the batch before is being written meanwhile
                await anyio.lowlevel.checkpoint()  # let this loop turn's writes join
                self._batch = None
                await self._write(batch)
                for rest in batch.rest:
                    try:
                        await rest
                    except Exception:
                        log.exception("finishing a kept message failed")

    async def _settle(self, batch: _Batch, leader: bool) -> None:
        if leader:
            await self._lead(batch)
        else:
            await batch.done.wait()
        error = batch.error
        if error is not None:
            if isinstance(error, ChatError):
                raise type(error)(error.message) from error
            raise Unavailable() from error

    async def _write(self, batch: _Batch) -> None:
        now = self.clock.now_ms()
        known = self._known
        prune_below_marks = self.history_days == 0
        webhook_rows = self.webhook_rows
        rows_written = [0]

        def work(tx: Transaction) -> list[int]:
            entries: list[tuple[int, Delivery]] = []
            for write in batch.writes:
                check = write.check_user
                if check is not None and check not in known and tx.users.get(check) is None:
                    write.error = UnknownUser()
                    continue
                entries.extend(write.entries)
            positions = tx.inbox.append(entries, now) if entries else []
            if webhook_rows is not None and entries:
                # One event per delivery, however many inboxes keep it; in the same commit.
                unique = list({id(d): d for _, d in entries}.values())
                rows = webhook_rows(unique)
                tx.webhooks.add(rows, now)
                rows_written[0] = len(rows)
            if batch.marks:
                tx.inbox.set_marks(batch.marks)
            for user_id, pos in batch.read.items():
                # Read beyond the newest pos would count messages still to come as read.
                kept = min(pos, tx.inbox.last_pos(user_id))
                if tx.inbox.set_read_pos(user_id, kept):
                    batch.raised_read[user_id] = kept
            if prune_below_marks:
                for user_id in {user_id for user_id, _ in batch.marks}:
                    marks = tx.inbox.marks(user_id)
                    if marks:
                        tx.inbox.prune_user(user_id, min(m.pos for m in marks.values()))
            return positions

        try:
            positions = await self.uow.run(work)
        except BaseException as error:
            if not isinstance(error, ChatError):
                log.exception("writing %d inbox entries failed", len(batch.writes))
            batch.error = error
            batch.done.set()
            if batch.callbacks:
                failed = (type(error)(error.message) if isinstance(error, ChatError)
                          else Unavailable())
                for write in batch.writes:
                    if write.then is not None:
                        write.error = failed
                        self._call_then(batch, write)
            if not isinstance(error, Exception):
                raise
            return
        self.batches += 1
        if self.webhooks_written is not None and rows_written[0]:
            self.webhooks_written(rows_written[0])
        if self.observe is not None:
            self.observe(len(positions))
        start = 0
        known = self._known
        for write in batch.writes:
            if write.error is not None:
                if write.then is not None:
                    self._call_then(batch, write)
                continue
            end = start + len(write.entries)
            write.positions = positions[start:end]
            start = end
            check_user = write.check_user
            if check_user is not None and check_user not in known:
                self.known(check_user)
            try:
                self.committed(write)
            except Exception:
                log.exception("pushing a kept message failed")
            if write.then is not None:
                self._call_then(batch, write)
        batch.done.set()

    @staticmethod
    def _call_then(batch: _Batch, write: InboxWrite) -> None:
        assert write.then is not None
        try:
            rest = write.then(write)
        except Exception:
            log.exception("answering for a kept message failed")
            return
        if rest is not None:
            batch.rest.append(rest)
