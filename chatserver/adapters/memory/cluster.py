"""Presence and a message bus for nodes that share one process: one node on its own, or
several in a test. The Redis adapters do the same job between processes."""

from collections.abc import Callable, Collection, Sequence
from typing import cast

import anyio
from anyio.abc import TaskStatus
from attrs import Factory, define, field

from chatserver.domain.messages import Delivery, Event, Kept
from chatserver.domain.ports import BusHandler, DeviceSession


@define
class InProcessHub:
    """Where the nodes of one process meet: where each user's devices are online, and each
    node's inbox."""

    # user -> device -> where it is logged in
    locations: dict[int, dict[str, DeviceSession]] = Factory(dict)
    inboxes: dict[str, BusHandler] = Factory(dict)

    def attach(self, node_id: str, inbox: BusHandler) -> None:
        self.inboxes[node_id] = inbox
        self._tell_size()

    def detach(self, node_id: str) -> None:
        """The node is gone, as if it had died: its sessions are offline."""
        self.inboxes.pop(node_id, None)
        self._tell_size()
        for user_id, devices in list(self.locations.items()):
            for device in [d for d, where in devices.items() if where.node_id == node_id]:
                del devices[device]
            if not devices:
                del self.locations[user_id]

    def _tell_size(self) -> None:
        for inbox in self.inboxes.values():
            inbox.cluster_size(len(self.inboxes))

    def live_sessions(self, user_id: int) -> dict[str, DeviceSession]:
        alive = self.inboxes
        devices = self.locations.get(user_id, {})
        return {d: where for d, where in devices.items() if where.node_id in alive}


@define
class InProcessPresence:
    hub: InProcessHub

    async def claim(
        self, user_id: int, device: str, node_id: str, started_ms: int
    ) -> dict[str, DeviceSession]:
        before = self.hub.live_sessions(user_id)
        self.hub.locations.setdefault(user_id, {})[device] = DeviceSession(node_id, started_ms)
        return before

    async def release(self, user_id: int, device: str, node_id: str) -> bool:
        devices = self.hub.locations.get(user_id, {})
        where = devices.get(device)
        if where is not None and where.node_id == node_id:
            del devices[device]
            if not devices:
                del self.hub.locations[user_id]
        return bool(self.hub.live_sessions(user_id))

    async def locate(self, user_ids: Sequence[int]) -> dict[int, frozenset[str]]:
        found = {}
        for uid in user_ids:
            nodes = frozenset(w.node_id for w in self.hub.live_sessions(uid).values())
            if nodes:
                found[uid] = nodes
        return found

    async def live_nodes(self, node_ids: Collection[str]) -> set[str]:
        return {node for node in node_ids if node in self.hub.inboxes}

    async def sessions(self, user_id: int) -> dict[str, DeviceSession]:
        return dict(self.hub.live_sessions(user_id))


@define
class InProcessBus:
    """The bus as seen from one node (node_id): events it sends say they come from there."""

    hub: InProcessHub
    node_id: str

    async def deliver(
        self,
        node_id: str,
        user_ids: Sequence[int],
        event: Event,
        positions: Sequence[int] | None = None,
    ) -> bool:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is None:
            return False
        for index, user_id in enumerate(user_ids):
            one = event if positions is None else Kept(positions[index], cast(Delivery, event))
            await inbox.deliver(user_id, one, self.node_id)
        return True

    async def kick(
        self, node_id: str, user_id: int, device: str, reason: str | None = None
    ) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.kick(user_id, device, reason)

    async def forget_group(self, group_id: int) -> None:
        for node_id, inbox in list(self.hub.inboxes.items()):
            if node_id != self.node_id:
                await inbox.forget_group(group_id)

    async def forget_user(self, user_id: int) -> None:
        for node_id, inbox in list(self.hub.inboxes.items()):
            if node_id != self.node_id:
                await inbox.forget_user(user_id)

    async def forget_friend(self, node_id: str, user_id: int, friend_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.forget_friend(user_id, friend_id)

    async def blocked(self, node_id: str, user_id: int, by_id: int, blocked: bool) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.blocked(user_id, by_id, blocked)

    async def moved(self, node_id: str, user_id: int) -> None:
        inbox = self.hub.inboxes.get(node_id)
        if inbox is not None:
            await inbox.moved(user_id)

    async def relocated(self, user_id: int) -> None:
        for node_id, inbox in list(self.hub.inboxes.items()):
            if node_id != self.node_id:
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
        local_users: Callable[[], list[tuple[int, str, int]]],
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
