"""Accounts and sessions: register, log in (taking over an older session), log out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatserver.application.commands import Login, Logout, Register
from chatserver.application.hooks import AccountCreated, Authenticator
from chatserver.application.results import (
    Contact,
    Done,
    GroupMemberView,
    GroupView,
    LoggedIn,
    Registered,
)
from chatserver.application.sessions import Session
from chatserver.domain.errors import (
    InvalidCredentials,
    InvalidRequest,
    NameTaken,
    NotPermitted,
    Unavailable,
)
from chatserver.domain.messages import KickedNotice, PresenceNotice, is_chat
from chatserver.domain.ports import DeviceMark, DeviceSession, Transaction
from chatserver.domain.users import INDEFINITELY_MS, Account, User, check_name

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

        def add(tx: Transaction) -> AccountCreated:
            created = AccountCreated(tx.users.add(command.name, password_hash))
            node.record(tx, created)  # the webhook's row rides in the same commit
            return created

        created = await node.uow.run(add)
    except BaseException:
        registrations.release(address, reserved)  # no account was made: it does not count
        raise
    node.tell(created)
    return Registered(created.user.id)


async def login(command: Login, *, connection: Connection) -> LoggedIn:
    node = connection.node
    clock = node.clock
    if command.token is not None and node.authenticator is not None:
        account = await _token_account(command, command.token, node.authenticator, connection)
    elif command.password is None:
        raise InvalidRequest("token: this server takes passwords only")
    else:
        account = await _password_account(command, command.password, connection)
    # After the password: whether an account is suspended is no stranger's business.
    check_not_suspended(account, clock.now_ms())
    user = account.user
    device = command.device
    # Logging in again as the same user and device on the same connection is a quiet takeover.
    previous = connection.session
    relogin = previous is not None and previous.user.id == user.id and previous.device == device
    if previous is not None:
        reason = "logged in again" if relogin else "logged in as another user"
        await end_session(previous, node=node, takeover=relogin, reason=reason)
        connection.session = None
    async with node.user_locks.hold(user.id):
        started_ms = clock.now_ms()
        others, replaced = await _take_over(user.id, device, started_ms, node=node)
        # Friends hear of the first session only: a takeover keeps the user online.
        first = not others and not replaced and not relogin
        session = Session(
            user,
            connection.outbox,
            receipts=command.receipts,
            notices=command.notices,
            unreceipted_limit=node.limits.unreceipted_per_session,
            device=device,
            started_ms=started_ms,
            on_gap=node.gaps.notice,
        )
        # Registered before the inbox is read: from here on, pushes wait in the session.
        node.sessions.add(session)
        connection.session = session
        node.writer.known(user.id)
        try:
            if all(where.node_id != node.node_id for where in others.values()):
                # Other nodes may remember this user as elsewhere, or nowhere: not here.
                await node.bus.relocated(user.id)
            snapshot = await node.uow.run(
                lambda tx: _LoginSnapshot(
                    tx, user, command, node.limits.stored_per_user, clock.now_ms()
                )
            )
            located = await node.presence.locate(snapshot.contact_ids())
        except BaseException:
            # The login fails as a whole; the device's mark is as it was.
            connection.session = None
            await end_session(session, node=node, takeover=bool(others), reason="login failed")
            raise
        shown = [k for k in snapshot.waiting if command.notices or is_chat(k.delivery)]
        node.metrics.waiting_at_login(len(shown))
        session.friend_ids = {f.id for f in snapshot.friends}
        # Added to, not replaced: a BLOCK answered while the snapshot was on its way has
        # already told this session (note_blocked), and must not be lost. (An unblock in that
        # window is: the block holds until the next login, failing closed.)
        session.blocked_by |= set(snapshot.blockers)
        session.start(snapshot.last_pos, snapshot.waiting)
        if first:
            await node.router.notify(sorted(session.friend_ids), PresenceNotice(user.id, True))
    log.info(
        "session start user=%d device=%r address=%s receipts=%s devices=%d waiting=%d",
        user.id, device, connection.address, command.receipts, len(others) + 1, len(shown),
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
        waiting=tuple(shown),
        friend_requests=tuple(snapshot.requests),
        last_pos=snapshot.last_pos,
        read_pos=snapshot.read_pos,
        blocked=tuple(snapshot.blocked),
    )


async def logout(command: Logout, *, connection: Connection) -> Done:
    if connection.session is not None:
        await end_session(connection.session, node=connection.node, reason="logout")
        connection.session = None
    return Done()


async def end_session(
    session: Session, *, node: Node, reason: str, takeover: bool = False
) -> None:
    """End a session: keep how far its device got, and tell friends when the user's last
    session ended (a takeover replaces it: the user stays online)."""
    if session.ended:
        return
    mark = session.end()
    log.info(
        "session end user=%d reason=%r device=%r mark=%d",
        session.user.id, reason, session.device, mark.pos,
    )
    node.sessions.remove(session)
    user_id = session.user.id
    try:
        if session.next_pos is not None:  # the login read the inbox: the mark means something
            await node.writer.set_mark(user_id, session.device, mark)
    except Unavailable as error:
        # The device's mark stays where it was: what it had comes again at its next login.
        log.warning("keeping the mark of user %d failed: %s", user_id, error)
    if takeover:
        return
    try:
        if not await node.presence.release(user_id, session.device, node.node_id):
            await node.router.notify(sorted(session.friend_ids), PresenceNotice(user_id, False))
    except Unavailable as error:
        # A user still listed here is found gone when the node's lease lapses.
        log.warning("user %d logged out while the cluster was unreachable: %s", user_id, error)


async def kick(
    user_id: int, device: str, *, node: Node, takeover: bool = True, reason: str | None = None
) -> None:
    """End this node's session of user's device: a newer login of that device here replaced
    it (takeover: presence already names the new session), or a login elsewhere did, of the
    same device or of one device too many (its device is released, unless it moved), or
    what reason says (a suspension, a deletion: the KICKED_MSG says it)."""
    session = node.sessions.get(user_id, device)
    if session is None:
        return
    # A legacy session's connection closes once it is out.
    session.push(KickedNotice() if reason is None else KickedNotice(reason))
    if reason is None:
        reason = "replaced by a newer login" if takeover else "a newer login elsewhere"
    await end_session(session, node=node, takeover=takeover, reason=reason)


async def _take_over(
    user_id: int, device: str, started_ms: int, *, node: Node
) -> tuple[dict[str, DeviceSession], bool]:
    """Claim the device's session for this node: end the device's older session, and the
    user's longest-logged-in ones past the device limit. Return the user's other sessions
    that go on, and whether the device had a session (replaced now)."""
    replaced = node.sessions.get(user_id, device) is not None
    if replaced:
        await kick(user_id, device, node=node)
    sessions = await node.presence.claim(user_id, device, node.node_id, started_ms)
    before = sessions.pop(device, None)
    if before is not None and before.node_id != node.node_id:
        await node.bus.kick(before.node_id, user_id, device)
    replaced = replaced or before is not None
    excess = len(sessions) + 1 - node.limits.devices_per_user
    if excess > 0:
        oldest = sorted(sessions.items(), key=lambda item: item[1].started_ms)[:excess]
        for other, where in oldest:
            del sessions[other]
            if where.node_id == node.node_id:
                await kick(user_id, other, node=node, takeover=False)
            else:
                await node.bus.kick(where.node_id, user_id, other)
    return sessions, replaced


async def _password_account(command: Login, password: str, connection: Connection) -> Account:
    """The account whose password this is, or InvalidCredentials (counted by the throttle)."""
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
            right = await node.hasher.verify(password, stored_hash)
    except BaseException:
        if not hashed:  # refused by the hash queue, or gone while waiting: nothing was spent
            attempt.released()
        raise
    if not right or account is None:
        raise InvalidCredentials()
    attempt.succeeded()
    return account


# A token login's account never logs in with a password: no scrypt hash parses as this.
TOKEN_ONLY_HASH = "!token"


async def _token_account(
    command: Login, token: str, authenticator: Authenticator, connection: Connection
) -> Account:
    """The account the embedder's authenticator names for token, created on first sight.
    A refused token (or one naming another user than id or name) is InvalidCredentials,
    counted by the same throttle as a wrong password."""
    node = connection.node
    named = command.user_id is not None or command.name is not None
    key = f"?{command.user_id}:{command.name}" if named else "?token"
    attempt = await node.login_throttle.attempt(key, connection.address, node.clock)
    try:
        name = await authenticator(token)
    except BaseException as error:
        attempt.released()
        if isinstance(error, Exception):
            log.exception("the authenticator failed")
            raise Unavailable("the login service failed: try again") from error
        raise
    if name is None:
        raise InvalidCredentials()

    def find_or_create(tx: Transaction) -> tuple[Account, bool]:
        account = tx.users.account_by_name(name)
        if account is not None:  # a name from before today's rules keeps working
            return account, False
        check_name(name)
        user = tx.users.add(name, TOKEN_ONLY_HASH)
        node.record(tx, AccountCreated(user))
        return Account(user, TOKEN_ONLY_HASH), True

    account, created = await node.uow.run(find_or_create)
    user = account.user
    if created:  # made, whatever the rest of the LOGIN says
        node.tell(AccountCreated(user))
    if (command.user_id is not None and command.user_id != user.id) or (
        command.name is not None and command.name != user.name
    ):
        raise InvalidCredentials()
    attempt.succeeded()
    return account


def _find_account(tx: Transaction, command: Login) -> Account | None:
    if command.user_id is not None:
        return tx.users.account(command.user_id)
    if command.name is not None:
        return tx.users.account_by_name(command.name)
    return None


def suspension_message(until_ms: int) -> str:
    """The errmsg of a suspended user's LOGIN, and of their KICKED_MSG: until when, in UTC."""
    if until_ms >= INDEFINITELY_MS:
        return "this account is suspended"
    until = datetime.fromtimestamp(until_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"this account is suspended until {until}"


def check_not_suspended(account: Account | None, now_ms: int) -> None:
    """A suspended account's LOGIN is errno 12, saying until when (PROTOCOL.md Version 2)."""
    if account is not None and account.suspended_at(now_ms):
        assert account.suspended_until_ms is not None
        raise NotPermitted(suspension_message(account.suspended_until_ms))


class _LoginSnapshot:
    def __init__(
        self, tx: Transaction, user: User, command: Login, stored_limit: int, now_ms: int
    ) -> None:
        # Read again after the session was claimed: a suspension or deletion that committed
        # before this read stops the login here; one committed after it finds the session in
        # presence and ends it (application.account_changes.end_sessions).
        account = tx.users.account(user.id)
        if account is None:
            raise InvalidCredentials()
        check_not_suspended(account, now_ms)
        self.friends = tx.friends.friends_of(user.id)
        self.groups = [(g, tx.groups.members(g.id)) for g in tx.groups.groups_of(user.id)]
        self.requests = tx.friends.requesters_of(user.id)
        self.blocked = tx.friends.blocked_by(user.id)
        self.blockers = tx.friends.blockers_of(user.id)
        inbox = tx.inbox
        self.last_pos = inbox.last_pos(user.id)
        self.read_pos = inbox.read_pos(user.id)
        mark = _mark_at_login(inbox.marks(user.id), command)
        # The newest stored_limit of what waits: a device far behind syncs the rest.
        after = max(min(mark.pos, self.last_pos), self.last_pos - stored_limit)
        beyond = mark.beyond
        self.waiting = [
            kept
            for kept in inbox.after(user.id, after, stored_limit + len(beyond))
            if kept.pos not in beyond
        ][:stored_limit]

    def contact_ids(self) -> list[int]:
        ids = {f.id for f in self.friends}
        ids.update(m.user.id for _, members in self.groups for m in members)
        return sorted(ids)


def _mark_at_login(marks: dict[str, DeviceMark], command: Login) -> DeviceMark:
    """How far the device has got: as LOGIN's since says, else its own mark, else (a device
    not seen before) the lowest mark of the user's devices, with what that device had beyond
    it (receipted out of order, or chats a legacy client had past a notice it cannot show)."""
    if command.since is not None:
        return DeviceMark(command.since)
    mark = marks.get(command.device)
    if mark is not None:
        return mark
    if not marks:
        return DeviceMark(0)
    return min(marks.values(), key=lambda m: m.pos)
