"""ACCOUNT_MSG (PROTOCOL.md Version 2, "People who can protect themselves"): a user changes
their own password."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatserver.application.accounts import end_session
from chatserver.application.commands import AccountChange
from chatserver.application.results import Done
from chatserver.domain.errors import InvalidCredentials
from chatserver.domain.messages import KickedNotice

if TYPE_CHECKING:
    from chatserver.application.connection import Connection
    from chatserver.application.node import Node

log = logging.getLogger("chatserver.sessions")

PASSWORD_CHANGED = "the password was changed"


async def change_account(command: AccountChange, *, connection: Connection) -> Done:
    """Change the password (action "password"): the old one is checked like a LOGIN's (the
    login throttle counts a wrong one, errno 1; the hash queue's fair slots), the new one hashed
    in a slot of the same queue, and the user's other sessions, on every node, end with
    KICKED_MSG. The session that asked goes on."""
    session = connection.require_session()
    node = connection.node
    user_id = session.user.id
    account = await node.uow.run(lambda tx: tx.users.account(user_id))
    attempt = await node.login_throttle.attempt(str(user_id), connection.address, node.clock)
    hashed = False
    try:
        async with node.hashing.slot("login", connection.address):
            hashed = True
            right = await node.hasher.verify(
                command.password, account.password_hash if account else None
            )
    except BaseException:
        if not hashed:
            attempt.released()
        raise
    if not right or account is None:
        raise InvalidCredentials()
    attempt.succeeded()
    assert command.new_password is not None  # validated
    async with node.hashing.slot("register", connection.address):
        new_hash = await node.hasher.hash(command.new_password)
    await node.uow.run(lambda tx: tx.users.set_password_hash(user_id, new_hash))
    log.info("password changed user=%d device=%r", user_id, session.device)
    await end_other_sessions(user_id, session.device, node=node, reason=PASSWORD_CHANGED)
    return Done()


async def end_other_sessions(user_id: int, keep_device: str, *, node: Node, reason: str) -> None:
    """End every session of the user but keep_device's on this node, here and on other nodes,
    each told by KICKED_MSG."""
    for device, other in list(node.sessions.of(user_id).items()):
        if device != keep_device:
            other.push(KickedNotice(reason))
            await end_session(other, node=node, reason=reason)
    for device, where in (await node.presence.sessions(user_id)).items():
        if where.node_id != node.node_id:
            await node.bus.kick(where.node_id, user_id, device)
