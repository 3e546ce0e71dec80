"""What a node does with what other nodes send it over the bus."""

from functools import partial

from attrs import define

from chatserver.application.friends import note_blocked
from chatserver.application.lifecycle import kick
from chatserver.application.node import Node
from chatserver.domain.messages import Event, Kept
from chatserver.domain.ports import Transaction

# Positions read at once per session after a bus outage, and how many such pages at most;
# past them, what is missing is read when the next push shows the hole (or with SYNC).
CATCH_UP_LIMIT = 500
CATCH_UP_PAGES = 20


@define
class NodeInbox:
    """The bus handler of a node: it pushes what other nodes send to its users' sessions."""

    node: Node

    async def deliver(self, user_id: int, event: Event, origin: str) -> None:
        sessions = self.node.sessions.of(user_id)
        if not sessions:
            # The user left since origin looked: a delivery is in their inbox already, and
            # origin looks them up afresh next time.
            await self.node.bus.moved(origin, user_id)
            return
        for session in list(sessions.values()):
            session.push(event)

    async def moved(self, user_id: int) -> None:
        self.node.router.forget_location(user_id)

    async def kick(self, user_id: int, device: str, reason: str | None = None) -> None:
        # Its device is released here: if a login elsewhere took the device over, presence
        # names that node now and stays; if it was one device too many, the device goes.
        await kick(user_id, device, node=self.node, takeover=False, reason=reason)

    async def forget_group(self, group_id: int) -> None:
        self.node.groups.forget(group_id)

    async def forget_user(self, user_id: int) -> None:
        self.node.writer.forget(user_id)
        self.node.router.forget_location(user_id)

    async def forget_friend(self, user_id: int, friend_id: int) -> None:
        for session in self.node.sessions.of(user_id).values():
            session.friend_ids.discard(friend_id)

    async def blocked(self, user_id: int, by_id: int, blocked: bool) -> None:
        note_blocked(self.node, user_id, by_id, blocked)

    def cluster_size(self, nodes: int) -> None:
        self.node.share_cluster_rates(nodes)

    async def catch_up(self) -> None:
        """Pushes from other nodes may have been lost while the bus was down: each session
        reads what its user's inbox got after the last pos it has."""
        node = self.node
        for session in node.sessions.all():
            if session.ended or session.held is not None or session.next_pos is None:
                continue
            for _ in range(CATCH_UP_PAGES):
                missed = await node.uow.run(partial(_after, session.user.id, session.next_pos - 1))
                for kept in missed:
                    session.push(kept)
                if len(missed) < CATCH_UP_LIMIT or session.ended or session.early:
                    break


def _after(user_id: int, pos: int, tx: Transaction) -> list[Kept]:
    return tx.inbox.after(user_id, pos, CATCH_UP_LIMIT)
