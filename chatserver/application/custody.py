"""Custody of deliveries handed to another node: the sender's node keeps each one until that
node confirms it safe (stored, or receipted by the client). If that node dies first, the
sender stores it for the recipient's next login, so a node crash loses nothing acknowledged.
"""

import anyio
from attrs import Factory, define

from chatserver.domain.messages import Delivery
from chatserver.domain.ports import Presence, Transaction, UnitOfWork


@define
class Custody:
    presence: Presence
    uow: UnitOfWork
    held: dict[tuple[int, int], tuple[str, Delivery]] = Factory(dict)

    def keep(self, node_id: str, user_id: int, delivery: Delivery) -> None:
        self.held[(user_id, delivery.msg_id)] = (node_id, delivery)

    def release(self, user_id: int, msg_ids: list[int] | tuple[int, ...]) -> None:
        for msg_id in msg_ids:
            self.held.pop((user_id, msg_id), None)

    def __len__(self) -> int:
        return len(self.held)

    async def store_all(self) -> None:
        """This node is stopping: store everything still held, so nothing depends on it."""
        orphans = [(key[0], d) for key, (_, d) in self.held.items()]
        if orphans:
            await self.uow.run(lambda tx: _store(tx, orphans))
        self.held.clear()

    async def rescue(self) -> int:
        """Store what is held for nodes that have died; return how many deliveries that was."""
        if not self.held:
            return 0
        nodes = {node for node, _ in self.held.values()}
        dead = nodes - await self.presence.live_nodes(nodes)
        if not dead:
            return 0
        keys = [key for key, (node, _) in self.held.items() if node in dead]
        orphans = [(key[0], self.held[key][1]) for key in keys]
        await self.uow.run(lambda tx: _store(tx, orphans))
        for key in keys:
            self.held.pop(key, None)
        return len(orphans)


def _store(tx: Transaction, deliveries: list[tuple[int, Delivery]]) -> None:
    for user_id, delivery in deliveries:
        if tx.users.get(user_id) is not None:
            tx.messages.store(user_id, delivery)


async def keep_custody(custody: Custody, *, every_seconds: float) -> None:
    """Run for the node's lifetime: rescue deliveries held for nodes that died."""
    while True:
        await anyio.sleep(every_seconds)
        await custody.rescue()
