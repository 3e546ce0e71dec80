"""Friendships: requests, answers and removal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.application.commands import AddFriend, AnswerFriend, BlockUser, RemoveFriend
from chatserver.application.hooks import FriendRemoved, FriendRequested
from chatserver.application.results import Done
from chatserver.domain.errors import InvalidRequest, NotPermitted, RateLimited, UnknownUser
from chatserver.domain.friends import (
    ASK_AGAIN_AFTER_DECLINE_MS,
    RequestOutcome,
    check_answer,
    outcome_of_request,
)
from chatserver.domain.messages import (
    FriendAnswer,
    FriendRemovedNotice,
    FriendRequestNotice,
    PresenceNotice,
)
from chatserver.domain.ports import Transaction
from chatserver.domain.users import User

if TYPE_CHECKING:
    from chatserver.application.connection import Connection
    from chatserver.application.node import Node


async def add_friend(command: AddFriend, *, connection: Connection) -> Done:
    me = connection.user
    node = connection.node
    friend_id = command.friend_id
    now_ms = node.clock.now_ms()

    def ask(tx: Transaction) -> RequestOutcome | None:
        if friend_id != me.id and tx.users.get(friend_id) is None:
            raise UnknownUser()
        node.record(tx, FriendRequested(me.id, friend_id))  # raising below: rolled back
        if friend_id != me.id:
            if tx.friends.is_blocked(friend_id, me.id):
                return None  # errno 0 and it reaches nobody (PROTOCOL.md, BLOCK_MSG)
            if tx.friends.is_blocked(me.id, friend_id):
                raise NotPermitted("you block that user: unblock them first")
        outcome = outcome_of_request(
            me.id,
            friend_id,
            are_friends=tx.friends.are_friends(me.id, friend_id),
            they_asked_first=tx.friends.has_request(friend_id, me.id),
            declined_at_ms=tx.friends.declined_at(me.id, friend_id),
            now_ms=now_ms,
        )
        if outcome is RequestOutcome.SENT:
            tx.friends.add_request(me.id, friend_id)
        elif outcome is RequestOutcome.ACCEPTS_THEIRS:
            tx.friends.remove_request(friend_id, me.id)
            tx.friends.befriend(me.id, friend_id)
            tx.friends.forget_declines(me.id, friend_id)
        return outcome

    outcome = await node.uow.run(ask)
    node.tell(FriendRequested(me.id, friend_id))
    if outcome is None:
        return Done()
    if outcome is RequestOutcome.SENT:
        await node.router.notify([friend_id], FriendRequestNotice(me.id, me.name))
    elif outcome is RequestOutcome.ACCEPTS_THEIRS:
        await _tell_requester(friend_id, me, accepted=True, connection=connection)
        await _tell_presence(me.id, friend_id, connection=connection)
    return Done()


async def answer_friend(command: AnswerFriend, *, connection: Connection) -> Done:
    me = connection.user
    requester_id = command.requester_id
    check_answer(me.id, requester_id)
    now_ms = connection.node.clock.now_ms()

    def answer(tx: Transaction) -> None:
        if not tx.friends.remove_request(requester_id, me.id):
            raise UnknownUser("no friend request from that user")
        if command.accept:
            tx.friends.befriend(me.id, requester_id)
            tx.friends.forget_declines(me.id, requester_id)
        else:
            # The requester may ask again a day later (issue 13.4); older declines go.
            tx.friends.note_decline(
                requester_id, me.id, now_ms, forget_before_ms=now_ms - ASK_AGAIN_AFTER_DECLINE_MS
            )

    await connection.node.uow.run(answer)
    await _tell_requester(requester_id, me, accepted=command.accept, connection=connection)
    if command.accept:
        await _tell_presence(me.id, requester_id, connection=connection)
    return Done()


async def remove_friend(command: RemoveFriend, *, connection: Connection) -> Done:
    me = connection.user
    friend_id = command.friend_id
    node = connection.node

    def remove(tx: Transaction) -> bool:
        if tx.users.get(friend_id) is None:
            raise UnknownUser()
        were_friends = tx.friends.are_friends(me.id, friend_id)
        tx.friends.unfriend(me.id, friend_id)
        node.record(tx, FriendRemoved(me.id, friend_id))
        return were_friends

    were_friends = await node.uow.run(remove)
    node.tell(FriendRemoved(me.id, friend_id))
    if were_friends:
        await tell_friendship_ended(node, me.id, friend_id)
    return Done()


async def block_user(command: BlockUser, *, connection: Connection) -> Done:
    """BLOCK_MSG (PROTOCOL.md Version 2): blocking ends a friendship with the user and drops
    the requests between the two; unblocking only lifts the block. Changes are capped per user
    (Limits.block_changes_per_minute, errno 9); a request that changes nothing does not count."""
    me = connection.user
    node = connection.node
    other_id = command.user_id
    if other_id == me.id:
        raise InvalidRequest("userid: you cannot block yourself")
    key, now = str(me.id), node.clock.now_ms() / 1000
    if node.block_changes.blocked(key, now):
        raise RateLimited("too many blocks and unblocks: try again in a minute")

    def change(tx: Transaction) -> tuple[bool, bool]:
        if tx.users.get(other_id) is None:
            raise UnknownUser()
        if not command.block:
            return tx.friends.unblock(me.id, other_id), False
        changed = tx.friends.block(me.id, other_id)
        were_friends = tx.friends.are_friends(me.id, other_id)
        tx.friends.unfriend(me.id, other_id)
        tx.friends.remove_request(me.id, other_id)
        tx.friends.remove_request(other_id, me.id)
        return changed, were_friends

    changed, were_friends = await node.uow.run(change)
    if changed:
        node.block_changes.fail(key, now)
        # The blocked user's sessions refuse their chats to me on their own node.
        note_blocked(node, other_id, me.id, command.block)
        located = await node.presence.locate([other_id])
        for other_node in located.get(other_id, ()):
            if other_node != node.node_id:
                await node.bus.blocked(other_node, other_id, me.id, command.block)
    if were_friends:
        await tell_friendship_ended(node, me.id, other_id)
    return Done()


def note_blocked(node: Node, user_id: int, by_id: int, blocked: bool) -> None:
    """by blocked (or unblocked) user: user's sessions on this node learn it."""
    for session in node.sessions.of(user_id).values():
        if blocked:
            session.blocked_by.add(by_id)
        else:
            session.blocked_by.discard(by_id)


async def tell_friendship_ended(node: Node, user_id: int, other_id: int) -> None:
    """A friendship between the two ended (stored already): every node forgets it for their
    sessions, and each user's sessions get FRIEND_REMOVED_MSG naming the other (PROTOCOL.md
    Version 2, "People who can protect themselves"), without saying why."""
    for session in node.sessions.of(user_id).values():
        session.friend_ids.discard(other_id)
    for session in node.sessions.of(other_id).values():
        session.friend_ids.discard(user_id)
    located = await node.presence.locate([user_id, other_id])
    for user, other in ((other_id, user_id), (user_id, other_id)):
        for other_node in located.get(user, ()):
            if other_node != node.node_id:
                await node.bus.forget_friend(other_node, user, other)
    await node.router.notify([user_id], FriendRemovedNotice(other_id))
    await node.router.notify([other_id], FriendRemovedNotice(user_id))


async def _tell_requester(
    requester_id: int, me: User, *, accepted: bool, connection: Connection
) -> None:
    node = connection.node
    if accepted:
        for session in node.sessions.of(me.id).values():
            session.friend_ids.add(requester_id)
    answer = FriendAnswer(await node.message_ids.next(), me.id, me.name, accepted)
    await node.router.deliver([(requester_id, answer)])


async def _tell_presence(me_id: int, other_id: int, *, connection: Connection) -> None:
    """A friendship started: each of the two hears the other's current state (PROTOCOL.md
    Version 2, "Small gaps of version 1, closed"), so no client lists a friend of unknown state."""
    node = connection.node
    located = await node.presence.locate([me_id, other_id])
    online = {user_id for user_id, nodes in located.items() if nodes} | {me_id}
    await node.router.notify([me_id], PresenceNotice(other_id, other_id in online))
    await node.router.notify([other_id], PresenceNotice(me_id, True))
