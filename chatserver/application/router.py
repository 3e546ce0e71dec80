"""The router: each delivery is kept in every recipient's inbox (and, for a chat, the
sender's) before anything else, then pushed, with its pos, to every session of those users:
here directly, on other nodes through the bus. Notices go live or nowhere.

Where users on other nodes are (and that they are nowhere) is remembered for a while
(LOCATION_SECONDS): a node where a user logs in tells every node to look again, and a node
that gets something for a user who is not there says so. A push that goes astray loses
nothing: it is in the inbox, and the session reads what it missed (gap filler, catch-up,
the device's mark at the next login).
"""

import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, overload

import anyio
from attrs import Factory, define

from chatserver.application.inbox_writer import InboxWrite, InboxWriter
from chatserver.application.sessions import Session, SessionRegistry
from chatserver.domain.errors import ChatError, Unavailable
from chatserver.domain.messages import Delivery, DirectMessage, Event, Kept, Notice
from chatserver.domain.ports import MessageBus, Metrics, Presence

log = logging.getLogger("chatserver.router")

# How long where a user was seen is trusted without looking again. Being wrong costs a hop
# or a late push (see the module's docstring), not a message.
LOCATION_SECONDS = 30.0
# That a user is nowhere is trusted for less: a node that rejoins after a Redis outage claims
# its users again without telling anyone, and meanwhile its sessions are pushed nothing.
NOWHERE_SECONDS = 1.0
LOCATIONS_KEPT = 100_000

_NOWHERE: frozenset[str] = frozenset()

def _to_oneself(delivery: Delivery) -> bool:
    """A chat to its own sender. A legacy session that sent it is pushed it all the same: its
    client gets no ACK to carry its copy, and the original sent such a chat back to the
    connection that sent it (docs/protocol.md, "a message to yourself")."""
    return type(delivery) is DirectMessage and delivery.recipient_id == delivery.sender_id


# What a delivery without a coroutine calls once done (Router.deliver): with the positions,
# or the error; it may return what is left to await.
Then = Callable[[list[int] | ChatError], Coroutine[Any, Any, None] | None]
# A kept write to push to other nodes, then answer: its entries, their positions, its then.
_Pushed = tuple[Sequence[tuple[int, Delivery]], list[int], Then]


@define
class Router:
    node_id: str
    sessions: SessionRegistry
    presence: Presence
    bus: MessageBus
    writer: InboxWriter
    metrics: Metrics
    # Where users were seen (the nodes with a session of theirs, maybe none), and until when.
    _where: dict[int, tuple[frozenset[str], float]] = Factory(dict)
    _here: frozenset[str] = frozenset()  # {node_id}
    # The writes of the batch being answered that have users elsewhere (_committed).
    _pushing: list["_Pushed"] | None = None

    def __attrs_post_init__(self) -> None:
        self._here = frozenset({self.node_id})

    @overload
    def deliver(
        self,
        entries: Sequence[tuple[int, Delivery]],
        *,
        own: Session | None = None,
        check_user: int | None = None,
        then: None = None,
    ) -> Coroutine[Any, Any, list[int]]: ...

    @overload
    def deliver(
        self,
        entries: Sequence[tuple[int, Delivery]],
        *,
        own: Session | None = None,
        check_user: int | None = None,
        then: Then,
    ) -> None: ...

    def deliver(
        self,
        entries: Sequence[tuple[int, Delivery]],
        *,
        own: Session | None = None,
        check_user: int | None = None,
        then: Then | None = None,
    ) -> Coroutine[Any, Any, list[int]] | None:
        """Keep each (user, delivery) in that user's inbox, then push it to their sessions,
        here and on other nodes: the one way every use case delivers. own is the sending
        session (it has its copy); check_user a user who must exist (UnknownUser otherwise,
        and nothing is kept). The entries take their place in the inbox queue now
        (InboxWriter.enqueue).

        Without then: await what is returned, the positions (or the error raised).
        With then: no coroutine waits; the entries join the batch being gathered (the
        caller sees that one is: InboxWriter.gathering, open_batch), and then is called with
        the positions once they are pushed, or with the ChatError; what it returns, if
        anything, the batch's writer awaits."""
        if then is None:
            write = InboxWrite(entries, check_user=check_user, own=own)
            return self._delivered(entries, self.writer.enqueue(write))

        joined = self.writer.join_gathering(
            InboxWrite(entries, check_user, own, then=self._committed, delivered=then)
        )
        assert joined, "deliver(then=...) needs a batch being gathered"
        return None

    def _committed(self, write: InboxWrite) -> Coroutine[Any, Any, None] | None:
        then = write.delivered
        assert then is not None
        if write.error is not None:
            return then(write.error)
        if self.only_here(write.entries):
            return then(write.positions)
        # The writer calls this for every write of a batch at once, then awaits what they
        # return one after the other: the first with users elsewhere pushes them all, at
        # once, so that their bus messages travel together (one round trip, not one each).
        pushing = self._pushing
        if pushing is not None:
            pushing.append((write.entries, write.positions, then))
            return None
        pushing = self._pushing = [(write.entries, write.positions, then)]
        return self._push_all(pushing)

    async def _push_all(self, pushing: list[_Pushed]) -> None:
        """Push writes to users elsewhere, then answer each (its then), all at once."""
        if self._pushing is pushing:
            self._pushing = None  # the writes of the next batch start a list of their own
        if len(pushing) == 1:
            await self._then_pushed(*pushing[0])
            return
        async with anyio.create_task_group() as tasks:
            for entries, positions, then in pushing:
                tasks.start_soon(self._then_pushed, entries, positions, then)

    async def _then_pushed(
        self, entries: Sequence[tuple[int, Delivery]], positions: list[int], then: Then
    ) -> None:
        try:
            await self.send_remote(entries, positions)
            rest = then(positions)
            if rest is not None:
                await rest
        except Exception:  # one write's failure is not the others' (they run together)
            log.exception("finishing a kept message failed")

    async def _delivered(
        self,
        entries: Sequence[tuple[int, Delivery]],
        appended: Coroutine[Any, Any, list[int]],
    ) -> list[int]:
        positions = await appended
        if not self.only_here(entries):
            await self.send_remote(entries, positions)
        return positions

    def only_here(self, entries: Sequence[tuple[int, Delivery]]) -> bool:
        """Whether every user of entries is known, for now, to be on no other node: then
        send_remote has nothing to send (the common case on one node), and costs nothing."""
        now = time.monotonic()
        where = self._where
        here = self._here
        for user_id, _ in entries:
            seen = where.get(user_id)
            if seen is None or seen[1] <= now or not seen[0] <= here:
                return False
        return True

    def push_local(self, write: InboxWrite) -> None:
        """Push a write's entries to their users' sessions here (the writer calls this right
        after the commit, in pos order)."""
        own = write.own
        local = 0
        by_user = self.sessions.by_user
        for (user_id, delivery), pos in zip(write.entries, write.positions, strict=True):
            sessions = by_user.get(user_id)
            if sessions:
                kept = None  # made for the first session that is pushed it (not the sender's)
                for session in sessions.values():
                    if session is own and (session.notices or not _to_oneself(delivery)):
                        session.own(pos)
                    else:
                        if kept is None:
                            kept = Kept(pos, delivery)
                        session.push(kept)
                        local += 1
        if local:
            self.metrics.routed("local", local)

    async def notify(self, user_ids: Sequence[int], notice: Notice) -> None:
        """Tell every session of users who are online; nobody else hears of it."""
        for uid in user_ids:
            for session in list(self.sessions.of(uid).values()):
                session.push(notice)
        await self.notify_elsewhere(user_ids, notice)

    async def notify_elsewhere(self, user_ids: Sequence[int], notice: Notice) -> None:
        """Tell the sessions of users on other nodes."""
        if user_ids:  # a user without friends logging in or out: nobody to look up
            await self._send_by_node(list(user_ids), notice, None)

    def forget_location(self, user_id: int) -> None:
        """Where user_id is must be looked up next time."""
        self._where.pop(user_id, None)

    async def send_remote(
        self, entries: Sequence[tuple[int, Delivery]], positions: list[int]
    ) -> None:
        if not entries:
            return
        delivery = entries[0][1]
        if all(d is delivery for _, d in entries):
            user_ids = [uid for uid, _ in entries]
            await self._send_by_node(user_ids, delivery, positions)
            return
        for (uid, one), pos in zip(entries, positions, strict=True):
            await self._send_by_node([uid], one, [pos])

    async def _send_by_node(
        self, user_ids: list[int], event: Event, positions: list[int] | None
    ) -> None:
        """Hand event to the other nodes with sessions of user_ids: one bus message per node.
        The bus failing costs no message (it is kept), so it is logged, not raised."""
        try:
            located = await self._locate(user_ids)
            missed = await self._send(located, user_ids, event, positions)
            if missed:
                for uid in missed:
                    self.forget_location(uid)
                await self._send(await self._locate(missed), missed, event, positions)
        except Unavailable as error:
            log.warning("pushing to other nodes failed (kept, read later): %s", error)

    async def _send(
        self,
        located: dict[int, frozenset[str]],
        user_ids: list[int],
        event: Event,
        positions: list[int] | None,
    ) -> list[int]:
        by_node: dict[str, tuple[list[int], list[int]]] = {}
        me = self.node_id
        for index, uid in enumerate(user_ids):
            for node in located.get(uid, _NOWHERE):
                if node != me:
                    uids, poss = by_node.setdefault(node, ([], []))
                    uids.append(uid)
                    if positions is not None:
                        poss.append(positions[index])
        missed: list[int] = []
        for node, (uids, poss) in by_node.items():
            if await self.bus.deliver(node, uids, event, poss if positions is not None else None):
                self.metrics.routed("cross-node", len(uids))
            else:
                missed.extend(uids)
        return missed

    async def _locate(self, user_ids: Sequence[int]) -> dict[int, frozenset[str]]:
        """Where users are: remembered, or looked up (and remembered)."""
        now = time.monotonic()
        where = self._where
        found: dict[int, frozenset[str]] = {}
        unknown = []
        for uid in user_ids:
            seen = where.get(uid)
            if seen is not None and seen[1] > now:
                found[uid] = seen[0]
            else:
                unknown.append(uid)
        if unknown:
            located = await self.presence.locate(unknown)
            if len(where) + len(unknown) > LOCATIONS_KEPT:
                where.clear()
            until, until_nowhere = now + LOCATION_SECONDS, now + NOWHERE_SECONDS
            for uid in unknown:
                nodes = located.get(uid, _NOWHERE)
                where[uid] = (nodes, until if nodes else until_nowhere)
                found[uid] = nodes
        return found
