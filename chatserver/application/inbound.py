"""What a node does with what other nodes send it over the bus."""

from collections.abc import Sequence

from attrs import define

from chatserver.application.accounts import forget_once_written, kick
from chatserver.application.node import Node
from chatserver.application.sessions import DELIVERY_KINDS, Session
from chatserver.domain.messages import Delivery, Event, is_chat
from chatserver.domain.ports import Transaction


@define
class NodeInbox:
    """The bus handler of a node: it takes over what other nodes send to its users."""

    node: Node

    async def deliver(self, user_id: int, event: Event, origin: str) -> None:
        node = self.node
        session = node.sessions.get(user_id)
        if session is None:
            await self._not_here(user_id, event, origin)
            return
        if not isinstance(event, DELIVERY_KINDS):
            session.push(event)
            return
        if event.msg_id in session.unreceipted:
            session.origins[event.msg_id] = origin  # sent again after a bus outage: held already
            return
        if session.push(event):
            if session.receipts:
                session.origins[event.msg_id] = origin  # confirmed once receipted or stored
                return
        else:
            # The user lags too far behind: keep it for them.
            def store(tx: Transaction) -> None:
                if tx.users.get(user_id) is not None:
                    tx.messages.store(user_id, event)

            await node.uow.run(store)
        await node.bus.confirm(origin, user_id, [event.msg_id])

    async def _not_here(self, user_id: int, event: Event, origin: str) -> None:
        """The user left since origin looked (or origin remembered where they were): tell
        origin, and route it on from here, looking the user up afresh. A delivery is this
        node's to keep from then on (routed on with custody, or stored), so origin's is
        confirmed."""
        node = self.node
        await node.bus.moved(origin, user_id)
        node.router.forget_location(user_id)
        if isinstance(event, DELIVERY_KINDS):
            await node.router.deliver(user_id, event)
            await node.bus.confirm(origin, user_id, [event.msg_id])
        else:
            await node.router.notify([user_id], event)

    async def moved(self, user_id: int) -> None:
        self.node.router.forget_location(user_id)

    async def kick(self, user_id: int) -> None:
        await kick(user_id, node=self.node)

    async def confirm(self, user_id: int, msg_ids: Sequence[int]) -> None:
        self.node.custody.release(user_id, list(msg_ids))

    async def forget_group(self, group_id: int) -> None:
        self.node.groups.forget(group_id)

    async def forget_friend(self, user_id: int, friend_id: int) -> None:
        session = self.node.sessions.get(user_id)
        if session is not None:
            session.friend_ids.discard(friend_id)

    async def catch_up(self) -> None:
        node = self.node
        await _hand_over_again(node)
        sessions = [s for s in node.sessions.all() if s.held is None and not s.ended]
        if not sessions:
            return
        user_ids = [s.user.id for s in sessions]
        waiting = await node.uow.run(lambda tx: {u: tx.messages.waiting(u) for u in user_ids})
        for session in sessions:
            missed = [
                d
                for d in waiting[session.user.id]
                if d.msg_id not in session.stored_shown
                and d.msg_id not in session.unreceipted
                and (session.notices or is_chat(d))
            ]
            if missed and not session.ended:
                _show_stored(session, missed, node)


def _show_stored(session: Session, deliveries: list[Delivery], node: Node) -> None:
    """Push stored deliveries to a live session, on the terms of a login: kept in the store
    until receipted, or, without receipts, deleted once written."""
    shown = [d.msg_id for d in deliveries if session.outbox.push(d)]
    if session.receipts:
        session.stored_shown.update(shown)
    else:
        forget_once_written(session, shown, node)


async def _hand_over_again(node: Node) -> None:
    """The bus was down: what this node handed to others may have been lost on the way, so it
    hands it over again (the other node ignores what it holds already)."""
    for (user_id, _), (other, delivery) in list(node.custody.held.items()):
        if not await node.bus.deliver(other, [user_id], delivery):
            node.custody.release(user_id, [delivery.msg_id])
            await node.router.deliver(user_id, delivery)
