"""What an operator does to accounts and groups (`chatserver admin`): list and show them,
suspend, reset a password, delete, export, dissolve. Each acts through the same use cases and
ports as the protocol, so a node of the cluster (the admin command's own, without listeners)
ends sessions on every node through the bus."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from attrs import evolve, frozen

from chatserver.application.account_changes import acting_as
from chatserver.application.accounts import suspension_message
from chatserver.application.commands import DissolveGroup
from chatserver.application.groups import dissolve_group
from chatserver.application.lifecycle import end_sessions
from chatserver.domain.errors import UnknownGroup, UnknownUser
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import Kept
from chatserver.domain.ports import Transaction
from chatserver.domain.users import Account, User, check_password

if TYPE_CHECKING:
    from chatserver.application.node import Node

PASSWORD_RESET = "the password was reset by an operator"
PAGE = 500


@frozen
class UserRecord:
    """An account as an operator sees it."""

    account: Account
    online_devices: tuple[str, ...]


@frozen
class UserDetails:
    """Everything about one account: what `users show` prints and `users export` writes."""

    account: Account
    online_devices: tuple[str, ...]
    friends: tuple[User, ...]
    groups: tuple[tuple[Group, Member], ...]
    blocks: tuple[int, ...]
    blocked_by: tuple[int, ...]
    last_pos: int
    read_pos: int
    kept: tuple[Kept, ...] = ()
    # Pending friend requests it received (oldest first) and sent (ascending id), and the
    # declines it is in, either side: (requester, addressee, declined_ms).
    requests_from: tuple[int, ...] = ()
    requests_to: tuple[int, ...] = ()
    declines: tuple[tuple[int, int, int], ...] = ()


@frozen
class GroupDetails:
    group: Group
    members: tuple[Member, ...]


async def list_users(*, node: Node, online_only: bool = False) -> list[UserRecord]:
    """Every account, by id, with the devices it is logged in on now."""
    records: list[UserRecord] = []
    after = 0
    while True:
        page = await node.uow.run(partial(_accounts_after, after))
        if not page:
            return records
        located = await node.presence.locate([a.user.id for a in page])
        for account in page:
            devices: tuple[str, ...] = ()
            if located.get(account.user.id):
                devices = tuple(sorted(await node.presence.sessions(account.user.id)))
            if devices or not online_only:
                records.append(UserRecord(account, devices))
        after = page[-1].user.id


async def find_user(id_or_name: str, *, node: Node) -> Account:
    """The account with that id (digits) or else that name. Raises UnknownUser."""

    def find(tx: Transaction) -> Account | None:
        account = tx.users.account(int(id_or_name)) if id_or_name.isdigit() else None
        return account or tx.users.account_by_name(id_or_name)

    account = await node.uow.run(find)
    if account is None:
        raise UnknownUser(f"no user {id_or_name!r}")
    return account


async def show_user(user_id: int, *, node: Node, with_inbox: bool = False) -> UserDetails:
    """The account, its friends, groups (with its place in each), blocks and, with_inbox,
    every message kept in its inbox. Raises UnknownUser."""

    def read(tx: Transaction) -> UserDetails:
        account = tx.users.account(user_id)
        if account is None:
            raise UnknownUser()
        groups = []
        for group in tx.groups.groups_of(user_id):
            member = next(m for m in tx.groups.members(group.id) if m.user.id == user_id)
            groups.append((group, member))
        inbox = tx.inbox
        last = inbox.last_pos(user_id)
        kept: list[Kept] = []
        if with_inbox:
            while True:
                more = inbox.after(user_id, kept[-1].pos if kept else 0, PAGE)
                kept.extend(more)
                if len(more) < PAGE:
                    break
        return UserDetails(
            account,
            (),
            tuple(tx.friends.friends_of(user_id)),
            tuple(groups),
            tuple(tx.friends.blocked_by(user_id)),
            tuple(tx.friends.blockers_of(user_id)),
            last,
            inbox.read_pos(user_id),
            tuple(kept),
            tuple(u.id for u in tx.friends.requesters_of(user_id)),
            tuple(tx.friends.requested_by(user_id)),
            tuple(tx.friends.declines_of(user_id)),
        )

    details = await node.uow.run(read)
    devices = tuple(sorted(await node.presence.sessions(user_id)))
    return evolve(details, online_devices=devices)


async def suspend_user(user_id: int, until_ms: int, *, node: Node) -> int:
    """Suspend the account until until_ms: its LOGIN is errno 12 till then, and its sessions
    end now on every node (KICKED_MSG saying until when); return how many ended.
    Raises UnknownUser."""
    if not await node.uow.run(lambda tx: tx.users.set_suspended(user_id, until_ms)):
        raise UnknownUser()
    return await end_sessions(user_id, node=node, reason=suspension_message(until_ms))


async def unsuspend_user(user_id: int, *, node: Node) -> None:
    """Lift a suspension. Raises UnknownUser."""
    if not await node.uow.run(lambda tx: tx.users.set_suspended(user_id, None)):
        raise UnknownUser()


async def reset_password(user_id: int, password: str, *, node: Node) -> int:
    """Give the account a new password (REG's rules) and end its sessions on every node, as
    a forgotten or stolen password calls for; return how many ended.
    Raises UnknownUser, InvalidRequest."""
    check_password(password)
    new_hash = await node.hasher.hash(password)
    if not await node.uow.run(lambda tx: tx.users.set_password_hash(user_id, new_hash)):
        raise UnknownUser()
    return await end_sessions(user_id, node=node, reason=PASSWORD_RESET)


async def list_groups(*, node: Node) -> list[GroupDetails]:
    groups: list[GroupDetails] = []
    after = 0
    while True:
        page = await node.uow.run(partial(_groups_after, after))
        if not page:
            return groups
        groups.extend(page)
        after = page[-1].group.id


def _accounts_after(after: int, tx: Transaction) -> list[Account]:
    return tx.users.accounts(after, PAGE)


def _groups_after(after: int, tx: Transaction) -> list[GroupDetails]:
    return [GroupDetails(g, tuple(tx.groups.members(g.id))) for g in tx.groups.all(after, PAGE)]


async def show_group(group_id: int, *, node: Node) -> GroupDetails:
    """Raises UnknownGroup."""

    def read(tx: Transaction) -> GroupDetails:
        group = tx.groups.get(group_id)
        if group is None:
            raise UnknownGroup()
        return GroupDetails(group, tuple(tx.groups.members(group_id)))

    return await node.uow.run(read)


async def dissolve_group_as_operator(group_id: int, *, node: Node) -> int:
    """Dissolve the group through GROUP_DISSOLVE's use case, acting as its creator: every
    member gets GROUP_EVENT `dissolved` (by the creator); return how many members it had.
    Raises UnknownGroup."""
    details = await show_group(group_id, node=node)
    creator = next(m.user for m in details.members if m.role is Role.CREATOR)
    node.group_changes.forget(str(creator.id))  # an operator's act, not the creator's
    await dissolve_group(DissolveGroup(group_id), connection=acting_as(node, creator))
    return len(details.members)


@frozen
class Exported:
    """An account as `users export` wrote it, to create in another database."""

    account: Account
    friends: tuple[int, ...]
    groups: tuple[tuple[Group, Role, int], ...]  # the group, the role, muted until
    blocks: tuple[int, ...]
    blocked_by: tuple[int, ...]
    last_pos: int
    read_pos: int
    kept: tuple[Kept, ...]
    requests_from: tuple[int, ...] = ()
    requests_to: tuple[int, ...] = ()
    declines: tuple[tuple[int, int, int], ...] = ()


async def import_account(exported: Exported, *, node: Node) -> None:
    """Create an exported account with its id, name, password hash and suspension, in one
    transaction: its friendships, blocks, pending requests and declines with users of this
    database that have those ids,
    its groups (created, with their ids, where this database has no group of that id), and
    its inbox at the same positions. Importing every user of a database in turn reproduces
    it. Raises NameTaken (the id or name is in use here, or a group's name)."""
    user_id = exported.account.user.id

    def restore(tx: Transaction) -> None:
        tx.users.restore(exported.account)
        friends = tx.friends
        # Each tie with another user, as (that user, how to restore it): kept where this
        # database has that user.
        ties: list[tuple[int, Callable[[], object]]] = [
            *((f, partial(friends.befriend, user_id, f)) for f in exported.friends),
            *((b, partial(friends.block, user_id, b)) for b in exported.blocks),
            *((b, partial(friends.block, b, user_id)) for b in exported.blocked_by),
            *((r, partial(friends.add_request, r, user_id)) for r in exported.requests_from),
            *((a, partial(friends.add_request, user_id, a)) for a in exported.requests_to),
            # A decline forgets no other (declines are forgotten a day after the next is noted).
            *(
                (a if r == user_id else r,
                 partial(friends.note_decline, r, a, when, forget_before_ms=0))
                for r, a, when in exported.declines
            ),
        ]
        for other, tie in ties:
            if tx.users.get(other) is not None:
                tie()
        for group, role, muted_until in exported.groups:
            if tx.groups.get(group.id) is None:
                tx.groups.restore(group)
            tx.groups.add_member(group.id, user_id, role)
            if muted_until:
                tx.groups.set_muted(group.id, user_id, muted_until)
        tx.inbox.restore(
            user_id, exported.kept, exported.last_pos, exported.read_pos, node.clock.now_ms()
        )
        if exported.kept:
            tx.message_ids.advance_past(max(k.delivery.msg_id for k in exported.kept))

    await node.uow.run(restore)
