"""Sessions: a logged-in user on one connection of this node, and the registry of them."""

from collections.abc import Iterable

from attrs import Factory, define

from chatserver.domain.messages import (
    CHAT_KINDS,
    Delivery,
    DirectMessage,
    Event,
    FriendAnswer,
    GroupMessage,
    KickedNotice,
)
from chatserver.domain.ports import Outbox
from chatserver.domain.users import User

DELIVERY_KINDS = (DirectMessage, GroupMessage, FriendAnswer)


@define(eq=False)
class Session:
    """One login of a user on one connection.

    A session with receipts keeps every delivery it was handed until the client receipts it;
    whatever is still unreceipted when the session ends is stored for the next login.
    """

    user: User
    outbox: Outbox
    receipts: bool
    notices: bool
    unreceipted_limit: int
    friend_ids: set[int] = Factory(set)
    unreceipted: dict[int, Delivery] = Factory(dict)
    # Stored msg_ids shown at login that the store still holds until receipted.
    stored_shown: set[int] = Factory(set)
    # Deliveries that another node keeps custody of until this session receipts them.
    origins: dict[int, str] = Factory(dict)
    # Events that arrive before the login reply is out wait here, to follow it.
    held: list[Event] | None = Factory(list)
    ended: bool = False

    def push(self, event: Event) -> bool:
        """Hand an event to the client; False if a delivery must be stored instead."""
        if self.ended:
            return False
        if not isinstance(event, CHAT_KINDS):  # chats, nearly all of it, pass one check
            if not self.notices:
                # Clients of the original server see chats only; answers wait for a modern login.
                if isinstance(event, KickedNotice):
                    # Its client cannot be told: the connection ends once what it was sent is out.
                    self.outbox.after_flush(self._close_outbox)
                return not isinstance(event, FriendAnswer)
            if isinstance(event, FriendAnswer) and event.accepted:
                self.friend_ids.add(event.responder_id)
        tracked = False
        if self.receipts and isinstance(event, DELIVERY_KINDS):
            if len(self.unreceipted) >= self.unreceipted_limit:
                self.outbox.close()  # too far behind: end it, what it holds gets stored
                return False
            self.unreceipted[event.msg_id] = event
            tracked = True
        if self.held is not None:
            self.held.append(event)
            return True
        # Once tracked as unreceipted, the session has custody even if the connection fails.
        return self.outbox.push(event) or tracked

    async def _close_outbox(self) -> None:
        self.outbox.close()

    def open(self) -> None:
        """The login reply is out: release what arrived meanwhile, in order."""
        held, self.held = self.held or [], None
        for event in held:
            self.outbox.push(event)

    def receipt(self, msg_ids: tuple[int, ...]) -> list[int]:
        """Forget receipted deliveries; return the stored ones the store may now delete."""
        stored = []
        for msg_id in msg_ids:
            self.unreceipted.pop(msg_id, None)
            if msg_id in self.stored_shown:
                self.stored_shown.discard(msg_id)
                stored.append(msg_id)
        return stored

    def take_origins(self, msg_ids: Iterable[int]) -> dict[str, list[int]]:
        """The nodes waiting to hear that these deliveries are safe, with their msg_ids."""
        by_node: dict[str, list[int]] = {}
        for msg_id in msg_ids:
            node = self.origins.pop(msg_id, None)
            if node is not None:
                by_node.setdefault(node, []).append(msg_id)
        return by_node

    def end(self) -> list[Delivery]:
        """End the session; return the deliveries that must be stored for the next login."""
        self.ended = True
        keep: dict[int, Delivery] = dict(self.unreceipted)
        for event in self.held or ():
            if isinstance(event, DELIVERY_KINDS):
                keep.setdefault(event.msg_id, event)
        self.unreceipted.clear()
        self.held = None
        return [d for msg_id, d in keep.items() if msg_id not in self.stored_shown]


@define
class SessionRegistry:
    """The sessions of this node, by user id."""

    by_user: dict[int, Session] = Factory(dict)

    def get(self, user_id: int) -> Session | None:
        return self.by_user.get(user_id)

    def add(self, session: Session) -> None:
        self.by_user[session.user.id] = session

    def remove(self, session: Session) -> None:
        if self.by_user.get(session.user.id) is session:
            del self.by_user[session.user.id]

    def __len__(self) -> int:
        return len(self.by_user)

    def all(self) -> list[Session]:
        return list(self.by_user.values())

    def user_ids(self) -> list[int]:
        return list(self.by_user)
