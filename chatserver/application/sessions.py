"""Sessions: a logged-in user on one connection of this node, and the registry of them.

A user may have one session per device (PROTOCOL.md Version 2, "Devices"). Every delivery
reaches a session as Kept, at its pos in the user's inbox, and a session hands them to its
client in pos order with no hole: one that arrives early waits until the ones before it
have come (the gap filler reads them from the inbox if they are late).
"""

from collections.abc import Callable, Iterator

import anyio
from attrs import Factory, define

from chatserver.domain.messages import CHAT_KINDS, Event, FriendAnswer, Kept, KickedNotice
from chatserver.domain.ports import DeviceMark, Outbox
from chatserver.domain.users import User

# Early arrivals a session may hold while it waits for the ones before them.
EARLY_LIMIT = 10_000
# Positions receipted beyond a device's mark that are remembered (an unreceipted message
# below them holds the mark back); past it the oldest are forgotten: they may come again.
BEYOND_LIMIT = 1000
# How long an ACK may wait for the pushes before its pos (holes are filled well within it).
REACHED_WAIT_SECONDS = 5.0


@define(eq=False)
class Session:
    """One login of a user's device on one connection.

    Deliveries are pushed in pos order. The device's mark (how far it has got) follows:
    everything before the lowest pos still waiting for a receipt (with receipts) or not
    sent at all (to a legacy client, which takes chats only), and what was handled beyond.
    """

    user: User
    outbox: Outbox
    receipts: bool
    notices: bool
    unreceipted_limit: int
    device: str = "default"
    started_ms: int = 0
    friend_ids: set[int] = Factory(set)
    # The users who block this user (loaded at login, kept by BLOCK on any node): a chat to
    # them is refused here, on the sender's node, without a database round trip.
    blocked_by: set[int] = Factory(set)
    # The next pos this session expects; None until the login has read the inbox.
    next_pos: int | None = None
    # Arrived before their turn, by pos; None for the session's own sends (nothing to push).
    early: dict[int, Kept | None] = Factory(dict)
    # msg_id -> pos of deliveries sent and not yet receipted, or (legacy) not sent at all.
    pending: dict[int, int] = Factory(dict)
    # Positions handled (receipted, or sent without receipts) above a pending one.
    done_beyond: set[int] = Factory(set)
    # Notices that arrive before the login reply is out wait here, to follow it.
    held: list[Event] | None = Factory(list)
    ended: bool = False
    # Called when the session has a hole to fill (set by the node's gap filler).
    on_gap: Callable[["Session"], None] | None = None
    gap_queued: bool = False
    _progress: anyio.Event | None = None

    # --- pushing ------------------------------------------------------------------------

    def push(self, event: Event) -> bool:
        """Hand an event to the client (a Kept in its turn); False if the session is over."""
        if self.ended:
            return False
        if type(event) is Kept:
            self._take(event.pos, event)
            return True
        if not self.notices and isinstance(event, KickedNotice):
            # Its client cannot be told: the connection ends once what it was sent is out.
            self.outbox.after_flush(self._close_outbox)
            return True
        if self.held is not None:
            self.held.append(event)
            return True
        return self.outbox.push(event)

    def own(self, pos: int) -> None:
        """This session's own send took pos in its user's inbox: its client has it."""
        if not self.ended:
            self._take(pos, None)

    def _take(self, pos: int, kept: Kept | None) -> None:
        expected = self.next_pos
        if (expected is not None and pos == expected and self.held is None
                and (kept is None or not self._full())):
            self._emit(pos, kept)
            self.next_pos = pos + 1
            if self.early:
                self._drain()
            self._advanced()
            return
        if expected is not None and pos < expected:
            return  # had it already (at login, or read to fill a hole)
        if len(self.early) >= EARLY_LIMIT:
            # Hopelessly behind: end it; the device's mark keeps the rest.
            self.outbox.close(f"over {EARLY_LIMIT} deliveries waiting for an earlier one")
            return
        self.early[pos] = kept
        if self.on_gap is not None and not self.gap_queued and self.hole() is not None:
            self.on_gap(self)

    def _drain(self) -> None:
        early = self.early
        pos = self.next_pos
        assert pos is not None
        while pos in early and (early[pos] is None or not self._full()):
            self._emit(pos, early.pop(pos))
            pos += 1
        self.next_pos = pos
        if early and self.on_gap is not None and not self.gap_queued and self.hole() is not None:
            self.on_gap(self)

    def _full(self) -> bool:
        """A receipting session holds as many unreceipted deliveries as it may: what comes next
        waits (in order, as early arrivals) until the client receipts, instead of ending the
        session, so a flood of messages cannot disconnect a client that keeps up."""
        return self.receipts and len(self.pending) >= self.unreceipted_limit

    def _emit(self, pos: int, kept: Kept | None) -> None:
        if kept is None:  # the session's own send
            if self.pending:
                self._handled(pos)
            return
        delivery = kept.delivery
        if not isinstance(delivery, CHAT_KINDS):
            if not self.notices:
                # Clients of the original server see chats only: answers wait for a modern
                # login, and the device's mark stays below them.
                self.pending[delivery.msg_id] = pos
                return
            if isinstance(delivery, FriendAnswer) and delivery.accepted:
                self.friend_ids.add(delivery.responder_id)
        if self.receipts:
            if len(self.pending) >= self.unreceipted_limit:
                # Too far behind: end it; its mark keeps the rest.
                self.outbox.close(f"over {self.unreceipted_limit} deliveries unreceipted")
                return
            self.pending[delivery.msg_id] = pos
        elif self.pending:
            self._handled(pos)
        if not self.outbox.push(kept) and not self.receipts:
            # Not written (the client is too far behind, its connection closing): the
            # device's mark stays below it, so its next login brings it.
            self.done_beyond.discard(pos)
            self.pending[delivery.msg_id] = pos

    def _handled(self, pos: int) -> None:
        beyond = self.done_beyond
        beyond.add(pos)
        if len(beyond) > BEYOND_LIMIT:
            beyond.discard(min(beyond))

    def _advanced(self) -> None:
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    def start(self, last_pos: int, shown: list[Kept]) -> None:
        """The login read the inbox up to last_pos and shows these: live pushes follow."""
        self.next_pos = last_pos + 1
        for pos in [p for p in self.early if p <= last_pos]:
            del self.early[pos]
        for kept in shown:
            delivery = kept.delivery
            if self.receipts or (not self.notices and not isinstance(delivery, CHAT_KINDS)):
                self.pending[delivery.msg_id] = kept.pos

    async def _close_outbox(self) -> None:
        self.outbox.close("logged in elsewhere (an original client cannot be told)")

    def open(self) -> None:
        """The login reply is out: release what arrived meanwhile, in order."""
        held, self.held = self.held or [], None
        for event in held:
            self.outbox.push(event)
        if self.early and self.next_pos is not None:
            self._drain()
            self._advanced()

    def fill(self, entries: list[Kept], through: int) -> None:
        """The gap filler read the inbox through pos `through` (entries): push what the hole
        before the early arrivals holds, stepping over positions no longer kept (pruned)."""
        if self.ended or self.next_pos is None or not self.early:
            return
        first_early = min(self.early)
        for kept in entries:
            if self.next_pos <= kept.pos < first_early:
                if self._full():  # the rest waits for receipts, at its place
                    self.next_pos = min(self.next_pos, kept.pos)
                    self.early[kept.pos] = kept
                    continue
                self.next_pos = kept.pos
                self._emit(kept.pos, kept)
                self.next_pos = kept.pos + 1
        if self._full() and min(self.early) <= self.next_pos:
            self._advanced()
            return
        # Positions read and not found were pruned: step over them (to what waits, if sooner).
        self.next_pos = max(self.next_pos, min(min(self.early), through + 1))
        self._drain()
        self._advanced()

    def hole(self) -> tuple[int, int] | None:
        """The positions missing before the first early arrival: (after, up to), or None."""
        if self.ended or self.next_pos is None or not self.early or self.held is not None:
            return None
        first = min(self.early)
        if first <= self.next_pos:
            return None  # no hole: the session waits for receipts (_full)
        return self.next_pos - 1, first - 1

    def has_reached(self, pos: int) -> bool:
        """Whether reached(pos) would return at once."""
        return self.next_pos is None or self.next_pos > pos

    async def reached(self, pos: int) -> None:
        """Wait until everything up to pos has been pushed (so an ACK carrying pos follows
        every push before it); bounded, as the gap filler fills holes within moments."""
        if self.next_pos is None or self.next_pos > pos:
            return
        with anyio.move_on_after(REACHED_WAIT_SECONDS):
            while not self.ended and self.next_pos is not None and self.next_pos <= pos:
                if self._progress is None:
                    self._progress = anyio.Event()
                await self._progress.wait()

    # --- receipts and the device's mark ---------------------------------------------------

    def receipt(self, msg_ids: tuple[int, ...]) -> bool:
        """Take receipts; True if the device's mark may have moved."""
        moved = False
        for msg_id in msg_ids:
            pos = self.pending.pop(msg_id, None)
            if pos is not None:
                self._handled(pos)
                moved = True
        if not self.pending:
            self.done_beyond.clear()
        if self.early and self.next_pos is not None and self.held is None:
            self._drain()  # what waited for these receipts goes out now
            self._advanced()
        return moved

    def mark(self) -> DeviceMark:
        """How far this device has got."""
        top = (self.next_pos or 1) - 1
        if not self.pending:
            return DeviceMark(top)
        low = min(min(self.pending.values()) - 1, top)
        return DeviceMark(low, frozenset(p for p in self.done_beyond if p > low))

    def end(self) -> DeviceMark:
        """End the session; return the device's mark to keep."""
        self.ended = True
        self.held = None
        self.early.clear()
        self._advanced()
        return self.mark()


@define
class SessionRegistry:
    """The sessions of this node, by user id and device."""

    by_user: dict[int, dict[str, Session]] = Factory(dict)

    def of(self, user_id: int) -> dict[str, Session]:
        """The sessions of user_id here, by device (empty if none)."""
        return self.by_user.get(user_id) or _NONE

    def get(self, user_id: int, device: str) -> Session | None:
        sessions = self.by_user.get(user_id)
        return None if sessions is None else sessions.get(device)

    def add(self, session: Session) -> None:
        self.by_user.setdefault(session.user.id, {})[session.device] = session

    def remove(self, session: Session) -> None:
        sessions = self.by_user.get(session.user.id)
        if sessions is not None and sessions.get(session.device) is session:
            del sessions[session.device]
            if not sessions:
                del self.by_user[session.user.id]

    def __len__(self) -> int:
        return sum(len(s) for s in self.by_user.values())

    def __iter__(self) -> Iterator[Session]:
        for sessions in list(self.by_user.values()):
            yield from list(sessions.values())

    def all(self) -> list[Session]:
        return list(self)

    def user_ids(self) -> list[int]:
        return list(self.by_user)

    def claims(self) -> list[tuple[int, str, int]]:
        """(user, device, started_ms) of every session here: to claim them again."""
        return [(s.user.id, s.device, s.started_ms) for s in self]


_NONE: dict[str, Session] = {}
