"""How the stores file an inbox entry under its conversation, for history (HISTORY_MSG).

One signed number per conversation, so one index serves both kinds: the peer's user id for a
one-to-one conversation (user ids are positive), minus the group id for a group. A delivery
that belongs to no conversation (a FriendAnswer) has none.
"""

from collections.abc import Sequence

from chatserver.domain.messages import Delivery, DirectMessage, GroupEvent, GroupMessage

# An inbox row as the SQL stores write it: (user, pos, msg_id, conversation).
InboxRow = tuple[int, int, int, int | None]


def conversation_of(user_id: int, delivery: Delivery) -> int | None:
    """The conversation a delivery belongs to in user's inbox, if any: for a DirectMessage the
    other user (user themself for a message to oneself), for a GroupMessage or GroupEvent
    its group."""
    if isinstance(delivery, DirectMessage):
        return delivery.recipient_id if delivery.sender_id == user_id else delivery.sender_id
    if isinstance(delivery, GroupMessage | GroupEvent):  # a group's history has its events
        return -delivery.group_id
    return None


def conversation_key(peer_id: int | None, group_id: int | None) -> int:
    """The key of a conversation named by exactly one of peer_id and group_id."""
    if peer_id is not None and group_id is None:
        return peer_id
    if group_id is not None and peer_id is None:
        return -group_id
    raise ValueError("name exactly one of peer_id and group_id")


def place(
    entries: Sequence[tuple[int, Delivery]], next_pos: dict[int, int]
) -> tuple[list[int], list[InboxRow], dict[int, Delivery]]:
    """Give each (user, delivery) of a batch its user's next pos, in order, starting from
    next_pos (user -> the first pos this batch may use; advanced as it goes): the positions,
    the inbox rows, and each message once by msg_id (a group message is kept once however many
    inboxes hold it)."""
    positions: list[int] = []
    rows: list[InboxRow] = []
    messages: dict[int, Delivery] = {}
    for user_id, delivery in entries:
        pos = next_pos[user_id]
        next_pos[user_id] = pos + 1
        positions.append(pos)
        msg_id = delivery.msg_id
        rows.append((user_id, pos, msg_id, conversation_of(user_id, delivery)))
        if msg_id not in messages:
            messages[msg_id] = delivery
    return positions, rows, messages
