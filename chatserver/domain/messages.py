"""What the server delivers to users.

A *delivery* carries a ``msg_id`` and follows the delivery rules: live if the recipient is
online, stored otherwise, and kept until receipted for sessions that asked for receipts.
A *notice* is live only: it is dropped when nobody is there to see it.
"""

from attrs import frozen

from chatserver.domain.errors import InvalidRequest

MAX_MESSAGE_LENGTH = 4096


@frozen
class FileRef:
    """A file attached to a chat message (PROTOCOL.md Version 2, "Files"): its bytes are
    stored once by their sha256."""

    id: int
    name: str
    size: int
    mime: str
    sha256: str


@frozen
class DirectMessage:
    msg_id: int
    sender_id: int
    sender_name: str
    recipient_id: int
    text: str
    sent_at_ms: int
    file: FileRef | None = None


@frozen
class GroupMessage:
    msg_id: int
    group_id: int
    sender_id: int
    sender_name: str
    text: str
    sent_at_ms: int
    file: FileRef | None = None


@frozen
class FriendAnswer:
    """Tells a requester that the other user answered their friend request."""

    msg_id: int
    responder_id: int
    responder_name: str
    accepted: bool


class GroupEventKind:
    """The `event` of a GroupEvent (PROTOCOL.md Version 2, GROUP_EVENT_MSG)."""

    JOINED = "joined"
    LEFT = "left"
    KICKED = "kicked"
    ROLE = "role"
    TRANSFER = "transfer"
    MUTED = "muted"
    UPDATED = "updated"
    DISSOLVED = "dissolved"


@frozen
class GroupEvent:
    """Something that happened to a group, kept in every member's inbox like a message: by is
    who acted, user_id whom it concerns (the actor for updated and dissolved). role, until,
    group_name and group_description are there where the event has them."""

    msg_id: int
    group_id: int
    event: str
    user_id: int
    by: int
    sent_at_ms: int
    role: str | None = None
    until: int | None = None
    group_name: str | None = None
    group_description: str | None = None


Delivery = DirectMessage | GroupMessage | FriendAnswer | GroupEvent

CHAT_KINDS = (DirectMessage, GroupMessage)


@frozen
class Kept:
    """A delivery at its place in one user's inbox: what a session of that user is pushed."""

    pos: int
    delivery: Delivery


@frozen
class FriendRequestNotice:
    requester_id: int
    requester_name: str


@frozen
class PresenceNotice:
    user_id: int
    online: bool


@frozen
class KickedNotice:
    reason: str = "logged in from somewhere else"


@frozen
class ReadNotice:
    """The user read everything up to pos on another device."""

    pos: int


@frozen
class FriendRemovedNotice:
    """The friendship with user_id ended (removed, blocked or an account deleted: not said)."""

    user_id: int


Notice = FriendRequestNotice | PresenceNotice | KickedNotice | ReadNotice | FriendRemovedNotice

Event = Delivery | Notice | Kept


def check_message_text(text: str) -> None:
    if not text:
        raise InvalidRequest("msg must not be empty")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise InvalidRequest(f"msg must be at most {MAX_MESSAGE_LENGTH} characters")


def is_chat(delivery: Delivery) -> bool:
    return isinstance(delivery, CHAT_KINDS)
