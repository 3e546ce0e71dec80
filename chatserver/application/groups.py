"""Groups: create, join, leave, and running them (PROTOCOL.md Version 2, "Groups that can be
run"): kick, roles, transfer, dissolve, mute, update. Who may do what to whom is the domain's
one table (domain.groups.PERMITTED); every use case here asks it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import frozen

from chatserver.application.commands import (
    CreateGroup,
    DissolveGroup,
    JoinGroup,
    KickMember,
    LeaveGroup,
    MuteMember,
    SetMemberRole,
    TransferGroup,
    UpdateGroup,
)
from chatserver.application.hooks import GroupFounded
from chatserver.application.results import (
    Done,
    GroupCreated,
    GroupJoined,
    GroupMemberView,
    GroupView,
)
from chatserver.domain.errors import (
    NotAMember,
    NotPermitted,
    RateLimited,
    Unavailable,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.groups import (
    Action,
    Group,
    Member,
    Role,
    check_permitted,
    successor,
)
from chatserver.domain.messages import GroupEvent, GroupEventKind
from chatserver.domain.ports import Transaction

if TYPE_CHECKING:
    from chatserver.application.connection import Connection


async def create_group(command: CreateGroup, *, connection: Connection) -> GroupCreated:
    me, node = connection.user, connection.node
    key, now = str(me.id), node.clock.now_ms() / 1000
    if node.group_creations.blocked(key, now):
        raise RateLimited("too many groups created: try again later")
    node.group_creations.fail(key, now)
    limit = node.limits.groups_per_user

    def create(tx: Transaction) -> GroupFounded:
        _check_room(tx, me.id, limit)
        group = tx.groups.create(command.name, command.description, me.id)
        founded = GroupFounded(group.id, me.id, command.name)
        node.record(tx, founded)  # the webhook's row rides in the same commit
        return founded

    founded = await node.uow.run(create)
    node.tell(founded)
    return GroupCreated(founded.group_id)


def _check_room(tx: Transaction, user_id: int, limit: int) -> None:
    if limit and len(tx.groups.groups_of(user_id)) >= limit:
        raise RateLimited(f"already in {limit} groups: leave one first")


async def join_group(command: JoinGroup, *, connection: Connection) -> GroupJoined:
    _check_changes(connection)
    me = connection.user
    group_id = command.group_id
    node = connection.node
    limit = node.limits.groups_per_user
    member_limit = node.limits.group_members

    def join(tx: Transaction) -> tuple[Group, list[Member], bool]:
        group = tx.groups.get(group_id)
        if group is None:
            raise UnknownGroup()
        members = tx.groups.members(group_id)
        if any(m.user.id == me.id for m in members):
            return group, members, False
        if member_limit and len(members) >= member_limit:
            raise NotPermitted(f"the group is full ({member_limit} members)")
        _check_room(tx, me.id, limit)
        tx.groups.add_member(group_id, me.id, Role.NORMAL)
        return group, tx.groups.members(group_id), True

    group, members, joined = await node.uow.run(join)
    await _membership_changed(group_id, connection)
    if joined:
        await _announce(connection, group_id, GroupEventKind.JOINED, me.id, _ids(members))
    located = await node.presence.locate([m.user.id for m in members])
    online = set(located) | {me.id}
    view = GroupView(
        group, tuple(GroupMemberView(m.user, m.role, m.user.id in online) for m in members)
    )
    return GroupJoined(view)


@frozen
class _Standing:
    """A group as one of its members acts in it: the group, its members in joining order, the
    actor, and the member acted on (if any)."""

    group: Group
    members: list[Member]
    actor: Member
    target: Member | None = None


def _standing(tx: Transaction, group_id: int, actor_id: int, target_id: int | None) -> _Standing:
    """Load what a group use case needs, checking in the protocol's order: an unknown group
    (errno 5), an actor who is not a member (6), an unknown user (4), a user who is not a
    member (6)."""
    group = tx.groups.get(group_id)
    if group is None:
        raise UnknownGroup()
    members = tx.groups.members(group_id)
    by_id = {m.user.id: m for m in members}
    actor = by_id.get(actor_id)
    if actor is None:
        raise NotAMember()
    if target_id is None:
        return _Standing(group, members, actor)
    target = by_id.get(target_id)
    if target is None:
        if tx.users.get(target_id) is None:
            raise UnknownUser()
        raise NotAMember("that user is not a member of the group")
    return _Standing(group, members, actor, target)


async def leave_group(command: LeaveGroup, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user
    group_id = command.group_id

    def leave(tx: Transaction) -> tuple[Member | None, list[int]]:
        """The new creator if the role passed on, and who is left (nobody: dissolved)."""
        standing = _standing(tx, group_id, me.id, None)
        heir = None
        if standing.actor.role is Role.CREATOR:
            heir = successor(standing.members, me.id)
            if heir is None:  # alone: the group goes
                tx.groups.delete(group_id)
                return None, []
            if not tx.groups.set_role(group_id, heir.user.id, Role.CREATOR):
                # The heir left meanwhile (another node): nothing is changed, try again.
                raise Unavailable("the group changed meanwhile: try again")
        tx.groups.remove_member(group_id, me.id)
        return heir, _ids(tx.groups.members(group_id))

    heir, left_behind = await connection.node.uow.run(leave)
    await _membership_changed(group_id, connection)
    if not left_behind:
        await _announce(connection, group_id, GroupEventKind.DISSOLVED, me.id, [me.id])
        return Done()
    if heir is not None:
        await _announce(
            connection,
            group_id,
            GroupEventKind.TRANSFER,
            heir.user.id,
            [*left_behind, me.id],
            role=Role.CREATOR.value,
        )
    await _announce(connection, group_id, GroupEventKind.LEFT, me.id, [*left_behind, me.id])
    return Done()


async def kick_member(command: KickMember, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user

    def kick(tx: Transaction) -> list[int]:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.KICK, standing.target.role)
        tx.groups.remove_member(command.group_id, command.user_id)
        return _ids(tx.groups.members(command.group_id))

    members = await connection.node.uow.run(kick)
    await _membership_changed(command.group_id, connection)
    # The kicked member hears of it too, last, so their other devices learn it.
    recipients = [*members, command.user_id]
    await _announce(
        connection, command.group_id, GroupEventKind.KICKED, command.user_id, recipients
    )
    return Done()


async def set_member_role(command: SetMemberRole, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user
    role = Role(command.role)

    def give(tx: Transaction) -> list[int]:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.SET_ROLE, standing.target.role)
        tx.groups.set_role(command.group_id, command.user_id, role)
        return _ids(standing.members)

    members = await connection.node.uow.run(give)
    await _membership_changed(command.group_id, connection)
    await _announce(
        connection,
        command.group_id,
        GroupEventKind.ROLE,
        command.user_id,
        members,
        role=role.value,
    )
    return Done()


async def transfer_group(command: TransferGroup, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user

    def transfer(tx: Transaction) -> list[int]:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.TRANSFER, standing.target.role)
        if not tx.groups.set_role(command.group_id, command.user_id, Role.CREATOR):
            raise Unavailable("the group changed meanwhile: try again")  # they left meanwhile
        tx.groups.set_role(command.group_id, me.id, Role.ADMIN)
        return _ids(standing.members)

    members = await connection.node.uow.run(transfer)
    await _membership_changed(command.group_id, connection)
    await _announce(
        connection,
        command.group_id,
        GroupEventKind.TRANSFER,
        command.user_id,
        members,
        role=Role.CREATOR.value,
    )
    return Done()


async def dissolve_group(command: DissolveGroup, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user

    def dissolve(tx: Transaction) -> list[int]:
        standing = _standing(tx, command.group_id, me.id, None)
        check_permitted(standing.actor.role, Action.DISSOLVE)
        tx.groups.delete(command.group_id)
        return _ids(standing.members)

    had = await connection.node.uow.run(dissolve)
    await _membership_changed(command.group_id, connection)
    # Every member the group had.
    await _announce(connection, command.group_id, GroupEventKind.DISSOLVED, me.id, had)
    return Done()


async def mute_member(command: MuteMember, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user

    def mute(tx: Transaction) -> list[int]:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.MUTE, standing.target.role)
        tx.groups.set_muted(command.group_id, command.user_id, command.until)
        return _ids(standing.members)

    members = await connection.node.uow.run(mute)
    await _membership_changed(command.group_id, connection)
    await _announce(
        connection,
        command.group_id,
        GroupEventKind.MUTED,
        command.user_id,
        members,
        until=command.until,
    )
    return Done()


async def update_group(command: UpdateGroup, *, connection: Connection) -> Done:
    _check_changes(connection)
    me = connection.user

    def update(tx: Transaction) -> tuple[Group, list[int]]:
        standing = _standing(tx, command.group_id, me.id, None)
        check_permitted(standing.actor.role, Action.UPDATE)
        group = tx.groups.update(command.group_id, command.name, command.description)
        return group, _ids(standing.members)

    group, members = await connection.node.uow.run(update)
    await _membership_changed(command.group_id, connection)
    await _announce(
        connection,
        command.group_id,
        GroupEventKind.UPDATED,
        me.id,
        members,
        group_name=group.name,
        group_description=group.description,
    )
    return Done()


def _check_changes(connection: Connection) -> None:
    """Each group change tells every member (an entry in each inbox): a user may make
    Limits.group_changes_per_minute of them (errno 9 past it). Refused requests change
    nothing and tell nobody: they do not count."""
    node = connection.node
    if node.group_changes.blocked(str(connection.user.id), node.clock.now_ms() / 1000):
        raise RateLimited("too many group changes: try again in a minute")


def _ids(members: list[Member]) -> list[int]:
    return [m.user.id for m in members]


async def _announce(
    connection: Connection,
    group_id: int,
    event: str,
    user_id: int,
    recipients: list[int],
    *,
    role: str | None = None,
    until: int | None = None,
    group_name: str | None = None,
    group_description: str | None = None,
) -> None:
    """Keep a GROUP_EVENT in each recipient's inbox (like a message, through the inbox writer)
    and push it to their sessions, the actor's own included."""
    node = connection.node
    msg_id = node.message_ids.take()
    if msg_id is None:
        msg_id = await node.message_ids.next()
    happened = GroupEvent(
        msg_id=msg_id,
        group_id=group_id,
        event=event,
        user_id=user_id,
        by=connection.user.id,
        sent_at_ms=node.clock.now_ms(),
        role=role,
        until=until,
        group_name=group_name,
        group_description=group_description,
    )
    await node.router.deliver([(uid, happened) for uid in dict.fromkeys(recipients)])


async def _membership_changed(group_id: int, connection: Connection) -> None:
    node = connection.node
    node.group_changes.fail(str(connection.user.id), node.clock.now_ms() / 1000)
    connection.node.groups.forget(group_id)
    await connection.node.bus.forget_group(group_id)
