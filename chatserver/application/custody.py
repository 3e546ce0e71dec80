"""Custody of deliveries handed to another node: the sender's node keeps each one until that
node confirms it safe (stored, or receipted by the client). If that node dies first, the
sender routes it again: live to wherever the recipient has logged in since, or into the store.
So a node crash loses nothing acknowledged; a client may see a message twice (same msg_id).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from attrs import Factory, define

from chatserver.domain.errors import Unavailable
from chatserver.domain.messages import Delivery
from chatserver.domain.ports import Presence, Transaction, UnitOfWork

if TYPE_CHECKING:
    from chatserver.application.router import Router

log = logging.getLogger("chatserver.custody")


@define
class Custody:
    presence: Presence
    uow: UnitOfWork
    held: dict[tuple[int, int], tuple[str, Delivery]] = Factory(dict)
    # Deliveries that could not be stored (the database was down): stored again later.
    unstored: list[tuple[int, Delivery]] = Factory(list)

    def keep(self, node_id: str, user_id: int, delivery: Delivery) -> None:
        self.held[(user_id, delivery.msg_id)] = (node_id, delivery)

    def release(self, user_id: int, msg_ids: list[int] | tuple[int, ...]) -> None:
        for msg_id in msg_ids:
            self.held.pop((user_id, msg_id), None)

    def __len__(self) -> int:
        return len(self.held)

    async def store_all(self) -> None:
        """This node is stopping: store everything still held, so nothing depends on it."""
        orphans = [(key[0], d) for key, (_, d) in self.held.items()] + self.unstored
        if orphans:
            await self.uow.run(lambda tx: _store(tx, orphans))
        self.held.clear()
        self.unstored.clear()

    def store_later(self, deliveries: list[tuple[int, Delivery]]) -> None:
        """Keep deliveries that must be stored, to try again when the database is back."""
        self.unstored.extend(deliveries)

    async def retry_unstored(self) -> None:
        if self.unstored:
            pending = list(self.unstored)
            await self.uow.run(lambda tx: _store(tx, pending))
            del self.unstored[: len(pending)]

    async def take_orphans(self) -> list[tuple[int, Delivery]]:
        """Take back what is held for nodes that have died, to be routed again."""
        if not self.held:
            return []
        nodes = {node for node, _ in self.held.values()}
        dead = nodes - await self.presence.live_nodes(nodes)
        keys = [key for key, (node, _) in self.held.items() if node in dead]
        return [(key[0], self.held.pop(key)[1]) for key in keys]


def _store(tx: Transaction, deliveries: list[tuple[int, Delivery]]) -> None:
    for user_id, delivery in deliveries:
        if tx.users.get(user_id) is not None:
            tx.messages.store(user_id, delivery)


async def keep_custody(custody: Custody, router: Router, *, every_seconds: float) -> None:
    """Run for the node's lifetime: what was held for a node that died is routed again, so it
    reaches its recipient live wherever they logged in since, or waits in the store."""
    while True:
        await anyio.sleep(every_seconds)
        try:
            await custody.retry_unstored()
            for user_id, delivery in await custody.take_orphans():
                await router.deliver(user_id, delivery)
        except Unavailable as error:
            log.warning("custody check postponed: %s", error)
