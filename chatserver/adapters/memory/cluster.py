"""Presence and a message bus for nodes that share one process: one node on its own, or
several in a test. The Redis adapters do the same job between processes."""

from collections.abc import Callable, Collection, Sequence

import anyio
from anyio.abc import TaskStatus
from attrs import Factory, define, field

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
        """The node is gone, as if it had died: its users are offline."""
        self.inboxes.pop(node_id, None)
        for user_id in [u for u, n in self.locations.items() if n == node_id]:
            del self.locations[user_id]


@define
class InProcessPresence:
    hub: InProcessHub

    async def claim(self, user_id: int, node_id: str) -> str | None:
        previous = self.hub.locations.get(user_id)
        self.hub.locations[user_id] = node_id
        return previous if previous in self.hub.inboxes else None

    async def release(self, user_id: int, node_id: str) -> None:
        if self.hub.locations.get(user_id) == node_id:
            del self.hub.locations[user_id]

    async def locate(self, user_ids: Sequence[int]) -> dict[int, str]:
        where, alive = self.hub.locations, self.hub.inboxes
        return {uid: where[uid] for uid in user_ids if where.get(uid) in alive}

    async def live_nodes(self, node_ids: Collection[str]) -> set[str]:
        return {node for node in node_ids if node in self.hub.inboxes}


@define
class InProcessBus:
    """The bus as seen from one node (node_id): events it sends say they come from there."""

    hub: InProcessHub
    node_id: str

    async def deliver(self, node_id: str, user_ids: Sequence[int], event: Event) -> bool:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is None:
            return False
        for user_id in user_ids:
            await inbox.deliver(user_id, event, self.node_id)
        return True

    async def kick(self, node_id: str, user_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.kick(user_id)

    async def confirm(self, node_id: str, user_id: int, msg_ids: Sequence[int]) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.confirm(user_id, msg_ids)

    async def forget_group(self, group_id: int) -> None:
        for node_id, inbox in list(self.hub.inboxes.items()):
            if node_id != self.node_id:
                await inbox.forget_group(group_id)

    async def forget_friend(self, node_id: str, user_id: int, friend_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.forget_friend(user_id, friend_id)

    async def moved(self, node_id: str, user_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.moved(user_id)


@define
class InProcessCluster:
    """One node's place in an in-process hub: its presence, its bus, and its time attached."""

    hub: InProcessHub
    node_id: str
    presence: InProcessPresence = field(init=False)
    bus: InProcessBus = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.presence = InProcessPresence(self.hub)
        self.bus = InProcessBus(self.hub, self.node_id)

    async def run(
        self,
        inbox: BusHandler,
        local_users: Callable[[], list[int]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Be reachable through the hub until cancelled."""
        self.hub.attach(self.node_id, inbox)
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self.hub.detach(self.node_id)
