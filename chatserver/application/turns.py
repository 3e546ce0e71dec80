"""The chats of one connection take their places in the inbox in the order they were sent.

A transport may serve a connection's next chats while earlier ones wait for their commit
(pipelining). Each chat is started in request order, but one may wait for something before it
joins the inbox queue (a block of message ids, a group's roster loaded), and a later one must
not overtake it there: the sender's ACKs go out in request order, so their pos must rise in
that order too (PROTOCOL.md: pos in the order the user's sessions receive them).
"""

import anyio
from attrs import Factory, define


@define(eq=False)
class Turns:
    """Tickets in request order; a ticket's turn comes when every earlier one has passed."""

    issued: int = 0
    # Every ticket up to this one has taken its place (or given it up, failing before).
    passed: int = 0
    _early: set[int] = Factory(set)  # passed before their turn (failed early)
    _moved: anyio.Event | None = None

    def take(self) -> int:
        self.issued += 1
        return self.issued

    def mine(self, ticket: int) -> bool:
        return self.passed == ticket - 1

    async def wait(self, ticket: int) -> None:
        """Until every ticket before this one has passed."""
        while self.passed < ticket - 1:
            if self._moved is None:
                self._moved = anyio.Event()
            await self._moved.wait()

    def done(self, ticket: int) -> None:
        """ticket has taken its place, or will take none."""
        if ticket != self.passed + 1:
            self._early.add(ticket)
            return
        self.passed = ticket
        early = self._early
        while early and self.passed + 1 in early:
            early.discard(self.passed + 1)
            self.passed += 1
        moved = self._moved
        if moved is not None:
            self._moved = None
            moved.set()
