"""The router: each delivery goes live to a session here, through the bus to another node, or
into the store for the recipient's next login. Notices go live or nowhere.

Between two users online on this node nothing here touches the database or the network.
"""

from collections.abc import Sequence

from attrs import define

from chatserver.application.custody import Custody
from chatserver.application.sessions import SessionRegistry
from chatserver.domain.errors import QuotaExceeded, UnknownUser
from chatserver.domain.messages import Delivery, Notice
from chatserver.domain.ports import MessageBus, Metrics, Presence, Transaction, UnitOfWork


@define
class Router:
    node_id: str
    sessions: SessionRegistry
    presence: Presence
    bus: MessageBus
    uow: UnitOfWork
    custody: Custody
    metrics: Metrics
    # Messages waiting for one user, past which one-to-one senders get an error and group
    # messages are not stored for that user.
    stored_limit: int = 10_000

    def deliver_here(self, user_id: int, delivery: Delivery) -> bool:
        session = self.sessions.get(user_id)
        return session is not None and session.push(delivery)

    async def deliver(self, user_id: int, delivery: Delivery, *, known_user: bool = True) -> None:
        """Deliver to one user. With known_user False (a user's message), raise UnknownUser
        for a user who does not exist and QuotaExceeded past the stored limit."""
        if self.deliver_here(user_id, delivery):
            self.metrics.routed("local")
            return
        if self.sessions.get(user_id) is None and await self._deliver_remote([user_id], delivery):
            self.metrics.routed("cross-node")
            return

        def store(tx: Transaction) -> None:
            if not known_user:  # a user's message, not the server's own notice
                if tx.users.get(user_id) is None:
                    raise UnknownUser()
                if tx.messages.count(user_id) >= self.stored_limit:
                    raise QuotaExceeded()
            tx.messages.store(user_id, delivery)

        await self.uow.run(store)
        self.metrics.routed("stored")

    async def deliver_to_many(self, user_ids: Sequence[int], delivery: Delivery) -> list[int]:
        """Deliver one message to many users, storing for all who are away in one transaction.
        Return those away whose stored messages are at the limit: skipped, so that one full
        mailbox holds up nobody else."""
        elsewhere = [uid for uid in user_ids if not self.deliver_here(uid, delivery)]
        self.metrics.routed("local", len(user_ids) - len(elsewhere))
        if not elsewhere:
            return []
        remote = [uid for uid in elsewhere if self.sessions.get(uid) is None]
        delivered = set(await self._deliver_remote(remote, delivery)) if remote else set()
        self.metrics.routed("cross-node", len(delivered))
        away = [uid for uid in elsewhere if uid not in delivered]
        if not away:
            return []

        def store(tx: Transaction) -> list[int]:
            full = []
            for uid in away:
                if tx.messages.count(uid) >= self.stored_limit:
                    full.append(uid)
                else:
                    tx.messages.store(uid, delivery)
            return full

        full = await self.uow.run(store)
        self.metrics.routed("stored", len(away) - len(full))
        return full

    async def notify(self, user_ids: Sequence[int], notice: Notice) -> None:
        """Tell users who are online; nobody else hears of it."""
        remote = []
        for uid in user_ids:
            session = self.sessions.get(uid)
            if session is None:
                remote.append(uid)
            else:
                session.push(notice)
        if remote:
            located = await self.presence.locate(remote)
            for uid, node in located.items():
                if node != self.node_id:
                    await self.bus.deliver(node, uid, notice)

    async def _deliver_remote(self, user_ids: Sequence[int], delivery: Delivery) -> list[int]:
        """Hand delivery to users on other nodes, keeping custody; return those it reached."""
        located = await self.presence.locate(user_ids)
        reached = []
        for uid, node in located.items():
            if node == self.node_id:
                continue
            # Kept before handing over: the confirmation may come back before deliver returns.
            self.custody.keep(node, uid, delivery)
            handed_over = False
            try:
                handed_over = await self.bus.deliver(node, uid, delivery)
            finally:
                if not handed_over:  # not taken, or the bus failed: not ours to keep
                    self.custody.release(uid, [delivery.msg_id])
            if handed_over:
                reached.append(uid)
        return reached
