"""Accounts: register, log in (the session's life is application.lifecycle's), log out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatserver.application import lifecycle
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
from chatserver.domain.errors import (
    InvalidCredentials,
    InvalidRequest,
    NameTaken,
    NotPermitted,
    Unavailable,
)
from chatserver.domain.messages import Kept, is_chat
from chatserver.domain.ports import DeviceMark, Transaction
from chatserver.domain.users import INDEFINITELY_MS, Account, User, check_name

if TYPE_CHECKING:
    from chatserver.application.connection import Connection

log = logging.getLogger("chatserver.sessions")


async def register(command: Register, *, connection: Connection) -> Registered:
    node, address = connection.node, connection.address
    registrations = node.registrations
    registrations.attempt(address, node.clock.now_ms() / 1000)
    # The name before the hash: a taken name (or a case variant or look-alike of one) costs
    # no hash. This tells nothing that the reply to a REG does not (the name is taken either
    # way).
    if await node.uow.run(lambda tx: tx.users.name_in_use(command.name)):
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
    user = (await _authenticate(command, connection)).user
    device = command.device
    # Logging in again as the same user and device on the same connection is a quiet takeover.
    relogin = await lifecycle.end_previous(connection, user.id, device)
    async with node.user_locks.hold(user.id):
        starting = await lifecycle.claim(
            connection, user, device=device, receipts=command.receipts,
            notices=command.notices, quiet=relogin,
        )
        # How far the user's other devices with a session here have got: their marks are
        # written when they end or receipt, and a device never seen starts after the lowest.
        live = {
            other: session.mark()
            for other, session in node.sessions.of(user.id).items()
            if other != device and session.next_pos is not None and not session.ended
        }
        try:
            snapshot = await node.uow.run(
                lambda tx: _LoginSnapshot(
                    tx, user, command, node.limits.stored_per_user, node.clock.now_ms(), live
                )
            )
            located = await node.presence.locate(snapshot.contact_ids())
        except BaseException:
            await lifecycle.abandon(connection, starting)
            raise
        shown = [k for k in snapshot.waiting if command.notices or is_chat(k.delivery)]
        node.metrics.waiting_at_login(len(shown))
        await lifecycle.start(
            node, starting, friend_ids={f.id for f in snapshot.friends},
            blocked_by=set(snapshot.blockers), last_pos=snapshot.last_pos,
            waiting=snapshot.waiting,
        )
    log.info(
        "session start user=%d device=%r address=%s receipts=%s devices=%d waiting=%d",
        user.id, device, connection.address, command.receipts, len(starting.others) + 1,
        len(shown),
    )
    return _logged_in(user, snapshot, set(located) | {user.id}, shown)


async def _authenticate(command: Login, connection: Connection) -> Account:
    """The account a LOGIN proves to be, by token or by password, if it is not suspended."""
    node = connection.node
    if command.token is not None and node.authenticator is not None:
        account = await _token_account(command, command.token, node.authenticator, connection)
    elif command.password is None:
        raise InvalidRequest("token: this server takes passwords only")
    else:
        account = await _password_account(command, command.password, connection)
    # After the password: whether an account is suspended is no stranger's business.
    check_not_suspended(account, node.clock.now_ms())
    return account


def _logged_in(
    user: User, snapshot: _LoginSnapshot, online: set[int], shown: list[Kept]
) -> LoggedIn:
    """LOGIN's reply: the user's contacts and groups (with who of them is online), and what
    waits for the device."""
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
    await lifecycle.end_connection_session(connection, "logout")
    return Done()


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
        self,
        tx: Transaction,
        user: User,
        command: Login,
        stored_limit: int,
        now_ms: int,
        live: dict[str, DeviceMark],
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
        mark = _mark_at_login(inbox.marks(user.id), command, live)
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


def _mark_at_login(
    marks: dict[str, DeviceMark], command: Login, live: dict[str, DeviceMark]
) -> DeviceMark:
    """How far the device has got: as LOGIN's since says, else its own mark, else (a device
    not seen before) the lowest mark of the user's devices, with what that device had beyond
    it (receipted out of order, or chats a legacy client had past a notice it cannot show).
    live holds the marks of the user's other devices with a session on this node, which may
    have got further than their kept marks say."""
    if command.since is not None:
        return DeviceMark(command.since)
    mark = marks.get(command.device)
    if mark is not None:
        return mark
    if live:
        marks = dict(marks)
        for other, now in live.items():
            kept = marks.get(other)
            if kept is None or now.pos >= kept.pos:
                marks[other] = now
    if not marks:
        return DeviceMark(0)
    return min(marks.values(), key=lambda m: m.pos)
