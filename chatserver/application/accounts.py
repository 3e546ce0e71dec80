"""Accounts and sessions: register, log in (taking over an older session), log out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatserver.application.commands import Login, Logout, Register
from chatserver.application.results import (
    Contact,
    Done,
    GroupMemberView,
    GroupView,
    LoggedIn,
    Registered,
)
from chatserver.application.sessions import Session
from chatserver.domain.errors import InvalidCredentials, NameTaken, Unavailable
from chatserver.domain.messages import KickedNotice, PresenceNotice, is_chat
from chatserver.domain.ports import Transaction
from chatserver.domain.users import Account, User

if TYPE_CHECKING:
    from chatserver.application.connection import Connection
    from chatserver.application.node import Node

log = logging.getLogger("chatserver.sessions")


async def register(command: Register, *, connection: Connection) -> Registered:
    node, address = connection.node, connection.address
    registrations = node.registrations
    registrations.attempt(address, node.clock.now_ms() / 1000)
    # The name before the hash: a taken name costs no hash. This tells nothing that the
    # reply to a REG does not (the name is taken either way).
    if await node.uow.run(lambda tx: tx.users.account_by_name(command.name)) is not None:
        raise NameTaken()
    reserved = registrations.reserve(address, node.clock.now_ms() / 1000)
    try:
        async with node.hashing.slot("register", address):
            password_hash = await node.hasher.hash(command.password)
        user = await node.uow.run(lambda tx: tx.users.add(command.name, password_hash))
    except BaseException:
        registrations.release(address, reserved)  # no account was made: it does not count
        raise
    return Registered(user.id)


async def login(command: Login, *, connection: Connection) -> LoggedIn:
    node = connection.node
    throttle, clock = node.login_throttle, node.clock
    account = await node.uow.run(lambda tx: _find_account(tx, command))
    # By id or by name, one account is one key; unknown accounts are throttled too.
    key = str(account.user.id) if account else f"?{command.user_id}:{command.name}"
    # Counted as a failure before hashing (parallel guesses cannot all pass), taken back
    # if the password is right.
    attempt = await throttle.attempt(key, connection.address, clock)
    stored_hash = account.password_hash if account else None
    hashed = False
    try:
        async with node.hashing.slot("login", connection.address):
            hashed = True
            right = await node.hasher.verify(command.password, stored_hash)
    except BaseException:
        if not hashed:  # refused by the hash queue, or gone while waiting: nothing was spent
            attempt.released()
        raise
    if not right or account is None:
        raise InvalidCredentials()
    attempt.succeeded()
    user = account.user
    # Logging in again as the same user on the same connection is a quiet takeover.
    relogin = connection.session is not None and connection.session.user.id == user.id
    if connection.session is not None:
        reason = "logged in again" if relogin else "logged in as another user"
        await end_session(connection.session, node=node, takeover=relogin, reason=reason)
        connection.session = None
    async with node.user_locks.hold(user.id):
        takeover = await _take_over(user.id, node=node) or relogin
        session = Session(
            user,
            connection.outbox,
            receipts=command.receipts,
            notices=command.notices,
            unreceipted_limit=node.limits.unreceipted_per_session,
        )
        # Registered before the store is read: from here on, deliveries are held, not stored.
        node.sessions.add(session)
        connection.session = session
        try:
            snapshot = await node.uow.run(lambda tx: _load_login(tx, user))
            located = await node.presence.locate(snapshot.contact_ids())
        except BaseException:
            # The login fails as a whole: what arrived meanwhile is stored, nothing is lost.
            connection.session = None
            await end_session(session, node=node, takeover=takeover, reason="login failed")
            raise
        waiting = tuple(d for d in snapshot.waiting if command.notices or is_chat(d))
        node.metrics.waiting_at_login(len(waiting))
        session.friend_ids = {f.id for f in snapshot.friends}
        session.stored_shown = {d.msg_id for d in waiting}
        if not takeover:
            await node.router.notify(sorted(session.friend_ids), PresenceNotice(user.id, True))
    log.info(
        "session start user=%d address=%s receipts=%s takeover=%s waiting=%d",
        user.id, connection.address, command.receipts, takeover, len(waiting),
    )
    online = set(located) | {user.id}
    return LoggedIn(
        user=user,
        friends=tuple(Contact(f, f.id in online) for f in snapshot.friends),
        groups=tuple(
            GroupView(
                g,
                tuple(GroupMemberView(m.user, m.role, m.user.id in online) for m in members),
            )
            for g, members in snapshot.groups
        ),
        waiting=waiting,
        friend_requests=tuple(snapshot.requests),
    )


async def logout(command: Logout, *, connection: Connection) -> Done:
    if connection.session is not None:
        await end_session(connection.session, node=connection.node, reason="logout")
        connection.session = None
    return Done()


async def end_session(
    session: Session, *, node: Node, reason: str, takeover: bool = False
) -> None:
    """End a session: keep what it had not receipted, and tell friends unless it was replaced."""
    if session.ended:
        return
    leftovers = session.end()
    log.info(
        "session end user=%d reason=%r unreceipted_stored=%d",
        session.user.id, reason, len(leftovers),
    )
    node.sessions.remove(session)
    user_id = session.user.id
    if leftovers:

        def keep(tx: Transaction) -> None:
            for delivery in leftovers:
                tx.messages.store(user_id, delivery)

        try:
            await node.uow.run(keep)
        except Unavailable as error:
            log.warning("storing %d unreceipted for user %d later: %s", len(leftovers),
                        user_id, error)
            node.custody.store_later([(user_id, d) for d in leftovers])
    try:
        # Stored now, or receipted before: the nodes that kept custody may let go.
        for origin, msg_ids in session.take_origins(list(session.origins)).items():
            await node.bus.confirm(origin, user_id, msg_ids)
        if not takeover:
            await node.presence.release(user_id, node.node_id)
            await node.router.notify(sorted(session.friend_ids), PresenceNotice(user_id, False))
    except Unavailable as error:
        # Custody and presence heal by themselves: an unconfirmed delivery is kept by its
        # sender, and a user still listed here is found gone when the next message arrives.
        log.warning("user %d logged out while the cluster was unreachable: %s", user_id, error)


def forget_once_written(session: Session, msg_ids: list[int], node: Node) -> None:
    """Delete stored deliveries once the client's connection has written them out."""
    user_id, uow = session.user.id, node.uow

    async def forget() -> None:
        await uow.run(lambda tx: tx.messages.delete(user_id, msg_ids))

    session.outbox.after_flush(forget)


async def kick(user_id: int, *, node: Node) -> None:
    """End this node's session of user because a newer login replaced it."""
    session = node.sessions.get(user_id)
    if session is not None:
        session.push(KickedNotice())
        await end_session(session, node=node, takeover=True, reason="replaced by a newer login")


async def _take_over(user_id: int, *, node: Node) -> bool:
    """Claim the user for this node, ending any older session; True if there was one."""
    if node.sessions.get(user_id) is not None:
        await kick(user_id, node=node)
        return True
    previous = await node.presence.claim(user_id, node.node_id)
    if previous is not None and previous != node.node_id:
        await node.bus.kick(previous, user_id)
        return True
    return False


def _find_account(tx: Transaction, command: Login) -> Account | None:
    if command.user_id is not None:
        return tx.users.account(command.user_id)
    if command.name is not None:
        return tx.users.account_by_name(command.name)
    return None


class _LoginSnapshot:
    def __init__(self, tx: Transaction, user: User) -> None:
        self.friends = tx.friends.friends_of(user.id)
        self.groups = [(g, tx.groups.members(g.id)) for g in tx.groups.groups_of(user.id)]
        self.requests = tx.friends.requesters_of(user.id)
        self.waiting = tx.messages.waiting(user.id)

    def contact_ids(self) -> list[int]:
        ids = {f.id for f in self.friends}
        ids.update(m.user.id for _, members in self.groups for m in members)
        return sorted(ids)


def _load_login(tx: Transaction, user: User) -> _LoginSnapshot:
    return _LoginSnapshot(tx, user)
