"""ACCOUNT_MSG (PROTOCOL.md Version 2, "People who can protect themselves"): a user changes
their own password or deletes their account (ending the user's sessions on every node:
application.lifecycle.end_sessions)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from chatserver.application.commands import AccountChange, LeaveGroup
from chatserver.application.friends import tell_friendship_ended
from chatserver.application.groups import leave_group
from chatserver.application.lifecycle import end_connection_session, end_sessions
from chatserver.application.results import Done
from chatserver.application.sessions import Session
from chatserver.domain.errors import (
    InvalidCredentials,
    NotAMember,
    Unavailable,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.messages import Event
from chatserver.domain.ports import Transaction
from chatserver.domain.users import User

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from chatserver.application.connection import Connection
    from chatserver.application.node import Node

log = logging.getLogger("chatserver.sessions")

PASSWORD_CHANGED = "the password was changed"
ACCOUNT_DELETED = "the account was deleted"


async def change_account(command: AccountChange, *, connection: Connection) -> Done:
    """Change the password (action "password") or delete the account (action "delete"). The
    password is checked like a LOGIN's (the login throttle counts a wrong one, errno 1; the
    hash queue's fair slots). A new password is hashed in a slot of the same queue and the
    user's other sessions, on every node, end with KICKED_MSG; the session that asked goes on.
    A deletion ends every session (the one that asked after its ACK is written)."""
    session = connection.require_session()
    node = connection.node
    user_id = session.user.id
    await _check_password(command.password, connection)
    if command.action == "delete":
        await delete_account(user_id, node=node, asking=connection)
        return Done()
    assert command.new_password is not None  # validated
    async with node.hashing.slot("register", connection.address):
        new_hash = await node.hasher.hash(command.new_password)
    await node.uow.run(lambda tx: tx.users.set_password_hash(user_id, new_hash))
    log.info("password changed user=%d device=%r", user_id, session.device)
    await end_sessions(user_id, node=node, reason=PASSWORD_CHANGED, keep_device=session.device)
    return Done()


async def _check_password(password: str, connection: Connection) -> None:
    node = connection.node
    user_id = connection.user.id
    account = await node.uow.run(lambda tx: tx.users.account(user_id))
    attempt = await node.login_throttle.attempt(str(user_id), connection.address, node.clock)
    hashed = False
    try:
        async with node.hashing.slot("login", connection.address):
            hashed = True
            right = await node.hasher.verify(password, account.password_hash if account else None)
    except BaseException:
        if not hashed:
            attempt.released()
        raise
    if not right or account is None:
        raise InvalidCredentials()
    attempt.succeeded()


async def delete_account(user_id: int, *, node: Node, asking: Connection | None = None) -> None:
    """Delete the account (PROTOCOL.md, ACCOUNT delete): its sessions end on every node (the
    asking connection's without KICKED_MSG: it gets its ACK), its groups are left as by
    LEAVE_GROUP (a creator's passed on, or dissolved when alone), its friends get
    FRIEND_REMOVED, and its inbox, blocks and name go (UserRepository.delete).
    Raises UnknownUser."""
    user = await node.uow.run(lambda tx: tx.users.get(user_id))
    if user is None:
        raise UnknownUser()
    # Sessions first, so that nothing the user does races the deletion.
    if asking is not None:
        await end_connection_session(asking, ACCOUNT_DELETED)
    await end_sessions(user_id, node=node, reason=ACCOUNT_DELETED)
    acting = acting_as(node, user)
    groups = await node.uow.run(lambda tx: tx.groups.groups_of(user_id))
    for group in groups:
        # The account is going: its budget of group changes no longer protects anyone.
        node.group_changes.forget(str(user_id))
        with contextlib.suppress(NotAMember, UnknownGroup):  # left or dissolved meanwhile
            await leave_group(LeaveGroup(group.id), connection=acting)

    def erase(tx: Transaction) -> list[int]:
        friends = [f.id for f in tx.friends.friends_of(user_id)]
        if not tx.users.delete(user_id):
            raise UnknownUser()
        return friends

    friends = await node.uow.run(erase)
    # Chats to the id are errno 4 from now on, on every node (each remembered the user).
    node.writer.forget(user_id)
    try:
        await node.bus.forget_user(user_id)
    except Unavailable as error:  # deleted already: a node may keep a chat to the id meanwhile
        log.warning("telling the nodes that user %d is gone failed: %s", user_id, error)
    log.info("account deleted user=%d friends=%d groups=%d", user_id, len(friends), len(groups))
    for friend_id in friends:
        await tell_friendship_ended(node, user_id, friend_id)
    # A login whose snapshot was read before the deletion committed has claimed its session
    # by now: end it too (a later one finds no account).
    await end_sessions(user_id, node=node, reason=ACCOUNT_DELETED)


def acting_as(node: Node, user: User) -> Connection:
    """A connection acting as user without a login (an operator's action, an account being
    deleted): no session is registered, and what is pushed to it goes nowhere."""
    from chatserver.application.connection import Connection

    outbox = _Nowhere()
    connection = Connection(node, outbox, address="operator")
    connection.session = Session(
        user,
        outbox,
        receipts=False,
        notices=False,
        unreceipted_limit=node.limits.unreceipted_per_session,
        device="operator",
    )
    return connection


class _Nowhere:
    """The outbox of a connection acting for an operator: nobody reads it."""

    def push(self, event: Event) -> bool:
        return True

    def after_flush(self, callback: Callable[[], Awaitable[None]]) -> None:
        pass

    def close(self, reason: str = "closed by the server") -> None:
        pass
