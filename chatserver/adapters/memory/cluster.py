"""Presence and a message bus for nodes that share one process: one node on its own, or
several in a test. The Redis adapters do the same job between processes."""

from collections.abc import Sequence

from attrs import Factory, define

from chatserver.domain.messages import Event
from chatserver.domain.ports import BusHandler


@define
class InProcessHub:
    """Where the nodes of one process meet: who is online where, and each node's inbox."""

    locations: dict[int, str] = Factory(dict)
    inboxes: dict[str, BusHandler] = Factory(dict)

    def attach(self, node_id: str, inbox: BusHandler) -> None:
        self.inboxes[node_id] = inbox

    def detach(self, node_id: str) -> None:
        self.inboxes.pop(node_id, None)
        for user_id in [u for u, n in self.locations.items() if n == node_id]:
            del self.locations[user_id]


@define
class InProcessPresence:
    hub: InProcessHub

    async def claim(self, user_id: int, node_id: str) -> str | None:
        previous = self.hub.locations.get(user_id)
        self.hub.locations[user_id] = node_id
        return previous

    async def release(self, user_id: int, node_id: str) -> None:
        if self.hub.locations.get(user_id) == node_id:
            del self.hub.locations[user_id]

    async def locate(self, user_ids: Sequence[int]) -> dict[int, str]:
        where = self.hub.locations
        return {uid: where[uid] for uid in user_ids if uid in where}


@define
class InProcessBus:
    hub: InProcessHub

    async def deliver(self, node_id: str, user_id: int, event: Event) -> bool:
        inbox = self.hub.inboxes.get(node_id)
        return inbox is not None and await inbox.deliver(user_id, event)

    async def kick(self, node_id: str, user_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.kick(user_id)
