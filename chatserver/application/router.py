"""The router: each delivery goes live to a session here, through the bus to another node, or
into the store for the recipient's next login. Notices go live or nowhere.

Between two users online on this node nothing here touches the database or the network.
Where users on other nodes are is remembered for a while (LOCATION_SECONDS), so a message to
one costs no presence lookup either: a node that gets something for a user who has moved on
passes it along and says so (NodeInbox), and a node that is gone takes nothing (the bus says
so), after which the user is looked up again.
"""

import time
from collections.abc import Sequence

from attrs import Factory, define

from chatserver.application.custody import Custody
from chatserver.application.sessions import DELIVERY_KINDS, SessionRegistry
from chatserver.domain.errors import QuotaExceeded, UnknownUser
from chatserver.domain.messages import Delivery, Event, Notice
from chatserver.domain.ports import MessageBus, Metrics, Presence, Transaction, UnitOfWork

# How long where a user on another node was seen is trusted without looking again. Being wrong
# costs a hop, not a message (see the module's docstring), so this only bounds that.
LOCATION_SECONDS = 30.0
LOCATIONS_KEPT = 100_000


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
    # Where users on other nodes were seen, and until when that is trusted.
    _where: dict[int, tuple[str, float]] = Factory(dict)

    def deliver_here(self, user_id: int, delivery: Delivery) -> bool:
        session = self.sessions.get(user_id)
        return session is not None and session.push(delivery)

    async def deliver(self, user_id: int, delivery: Delivery, *, known_user: bool = True) -> None:
        """Deliver to one user. With known_user False (a user's message), raise UnknownUser
        for a user who does not exist and QuotaExceeded past the stored limit."""
        if not self.deliver_now(user_id, delivery):
            await self.deliver_elsewhere(user_id, delivery, known_user=known_user)

    def deliver_now(self, user_id: int, delivery: Delivery) -> bool:
        """deliver's first step, which needs no waiting: to the user's session on this node.
        False if that did not take it: deliver_elsewhere then."""
        if self.deliver_here(user_id, delivery):
            self.metrics.routed("local")
            return True
        return False

    async def deliver_elsewhere(
        self, user_id: int, delivery: Delivery, *, known_user: bool = True
    ) -> None:
        """The rest of deliver: to another node, or into the store."""
        if self.sessions.get(user_id) is None and await self._send_remote([user_id], delivery):
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
        delivered = set(await self._send_remote(remote, delivery)) if remote else set()
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
            await self._send_remote(remote, notice)

    def forget_location(self, user_id: int) -> None:
        """user_id is not where this node last saw them: look them up next time."""
        self._where.pop(user_id, None)

    async def _locate(self, user_ids: Sequence[int]) -> dict[int, str]:
        """Where users on other nodes are: remembered, or looked up (and remembered)."""
        now = time.monotonic()
        where = self._where
        found = {}
        unknown = []
        for uid in user_ids:
            seen = where.get(uid)
            if seen is not None and seen[1] > now:
                found[uid] = seen[0]
            else:
                unknown.append(uid)
        if unknown:
            located = await self.presence.locate(unknown)
            if len(where) + len(located) > LOCATIONS_KEPT:
                where.clear()
            until = now + LOCATION_SECONDS
            for uid, node in located.items():
                if node != self.node_id:
                    where[uid] = (node, until)
            found.update(located)
        return found

    async def _locate_again(self, user_ids: Sequence[int]) -> dict[int, str]:
        """Look up users whose node took nothing (it stopped or died since they were seen)."""
        for uid in user_ids:
            self.forget_location(uid)
        return await self._locate(user_ids) if user_ids else {}

    async def _send_remote(self, user_ids: Sequence[int], event: Event) -> list[int]:
        """Hand event to those of user_ids on other nodes, one bus message per node (a group
        message's copies for one node travel as one); return the users it reached. A delivery
        is kept in custody until the other node confirms it."""
        reached: list[int] = []
        missed = await self._send_by_node(await self._locate(user_ids), event, reached)
        if missed:
            await self._send_by_node(await self._locate_again(missed), event, reached)
        return reached

    async def _send_by_node(
        self, located: dict[int, str], event: Event, reached: list[int]
    ) -> list[int]:
        """Send to the users located, by node; add those reached to reached, return the rest."""
        by_node: dict[str, list[int]] = {}
        for uid, node in located.items():
            if node != self.node_id:
                by_node.setdefault(node, []).append(uid)
        missed = []
        for node, uids in by_node.items():
            if await self._hand_over(node, uids, event):
                reached.extend(uids)
            else:
                missed.extend(uids)
        return missed

    async def _hand_over(self, node: str, user_ids: list[int], event: Event) -> bool:
        if not isinstance(event, DELIVERY_KINDS):
            return await self.bus.deliver(node, user_ids, event)
        # Kept before handing over: the confirmation may come back before deliver returns.
        for uid in user_ids:
            self.custody.keep(node, uid, event)
        handed_over = False
        try:
            handed_over = await self.bus.deliver(node, user_ids, event)
        finally:
            if not handed_over:  # not taken, or the bus failed: not ours to keep
                for uid in user_ids:
                    self.custody.release(uid, [event.msg_id])
        return handed_over
