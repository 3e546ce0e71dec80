"""The gap filler: a session that got pos N+1 before N waits a moment (N is usually on its way,
from another node's commit), then reads the missing positions from the inbox. N is in the
inbox by then, as positions are allocated inside the transaction that keeps them: a pos
exists only once everything before it is committed. One that is not there was pruned."""

from __future__ import annotations

import logging
import time
from collections import deque

import anyio
from attrs import Factory, define

from chatserver.application.sessions import Session
from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import UnitOfWork

log = logging.getLogger("chatserver.gaps")

# How long an early arrival waits for the ones before it before they are read.
GAP_WAIT_SECONDS = 0.05
# Positions read at once to fill one hole.
FILL_LIMIT = 500


@define(eq=False)
class GapFiller:
    uow: UnitOfWork
    wait_seconds: float = GAP_WAIT_SECONDS
    _queue: deque[tuple[float, Session]] = Factory(deque)
    _wake: anyio.Event = Factory(anyio.Event)
    filled: int = 0

    def notice(self, session: Session) -> None:
        """session has a hole: fill it in a moment unless it closes by itself."""
        session.gap_queued = True
        self._queue.append((time.monotonic() + self.wait_seconds, session))
        self._wake.set()

    async def run(self) -> None:
        """Fill holes for as long as the node runs."""
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            due, session = self._queue[0]
            delay = due - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            self._queue.popleft()
            session.gap_queued = False
            try:
                await self.fill(session)
            except Unavailable as error:
                log.warning("filling a gap for user %d postponed: %s", session.user.id, error)
                if not session.ended:
                    self.notice(session)

    async def fill(self, session: Session) -> None:
        hole = session.hole()
        if hole is None:
            return
        after, up_to = hole
        user_id = session.user.id
        limit = min(up_to - after, FILL_LIMIT)
        entries = await self.uow.run(lambda tx: tx.inbox.after(user_id, after, limit))
        self.filled += 1
        session.fill(entries, after + limit)
        if session.hole() is not None and not session.gap_queued:
            self.notice(session)
