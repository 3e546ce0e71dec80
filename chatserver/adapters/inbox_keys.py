"""How the stores file an inbox entry under its conversation, for history (HISTORY_MSG).

One signed number per conversation, so one index serves both kinds: the peer's user id for a
one-to-one conversation (user ids are positive), minus the group id for a group. A delivery
that belongs to no conversation (a FriendAnswer) has none.
"""

from chatserver.domain.messages import Delivery, DirectMessage, GroupEvent, GroupMessage


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
