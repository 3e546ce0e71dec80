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

    def create(tx: Transaction) -> Group:
        _check_room(tx, me.id, limit)
        return tx.groups.create(command.name, command.description, me.id)

    group = await node.uow.run(create)
    return GroupCreated(group.id)


def _check_room(tx: Transaction, user_id: int, limit: int) -> None:
    if limit and len(tx.groups.groups_of(user_id)) >= limit:
        raise RateLimited(f"already in {limit} groups: leave one first")


async def join_group(command: JoinGroup, *, connection: Connection) -> GroupJoined:
    me = connection.user
    group_id = command.group_id
    node = connection.node
    limit = node.limits.groups_per_user
    member_limit = node.limits.group_members

    def join(tx: Transaction) -> tuple[Group, list[Member]]:
        group = tx.groups.get(group_id)
        if group is None:
            raise UnknownGroup()
        members = tx.groups.members(group_id)
        if not any(m.user.id == me.id for m in members):
            if member_limit and len(members) >= member_limit:
                raise NotPermitted(f"the group is full ({member_limit} members)")
            _check_room(tx, me.id, limit)
            tx.groups.add_member(group_id, me.id, Role.NORMAL)
            members = tx.groups.members(group_id)
        return group, members

    group, members = await node.uow.run(join)
    await _membership_changed(group_id, connection)
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
    me = connection.user
    group_id = command.group_id

    def leave(tx: Transaction) -> None:
        standing = _standing(tx, group_id, me.id, None)
        if standing.actor.role is Role.CREATOR:
            heir = successor(standing.members, me.id)
            if heir is None:  # alone: the group goes
                tx.groups.delete(group_id)
                return
            tx.groups.set_role(group_id, heir.user.id, Role.CREATOR)
        tx.groups.remove_member(group_id, me.id)

    await connection.node.uow.run(leave)
    await _membership_changed(group_id, connection)
    return Done()


async def kick_member(command: KickMember, *, connection: Connection) -> Done:
    me = connection.user

    def kick(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.KICK, standing.target.role)
        tx.groups.remove_member(command.group_id, command.user_id)

    await connection.node.uow.run(kick)
    await _membership_changed(command.group_id, connection)
    return Done()


async def set_member_role(command: SetMemberRole, *, connection: Connection) -> Done:
    me = connection.user
    role = Role(command.role)

    def give(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.SET_ROLE, standing.target.role)
        tx.groups.set_role(command.group_id, command.user_id, role)

    await connection.node.uow.run(give)
    await _membership_changed(command.group_id, connection)
    return Done()


async def transfer_group(command: TransferGroup, *, connection: Connection) -> Done:
    me = connection.user

    def transfer(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.TRANSFER, standing.target.role)
        tx.groups.set_role(command.group_id, command.user_id, Role.CREATOR)
        tx.groups.set_role(command.group_id, me.id, Role.ADMIN)

    await connection.node.uow.run(transfer)
    await _membership_changed(command.group_id, connection)
    return Done()


async def dissolve_group(command: DissolveGroup, *, connection: Connection) -> Done:
    me = connection.user

    def dissolve(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, None)
        check_permitted(standing.actor.role, Action.DISSOLVE)
        tx.groups.delete(command.group_id)

    await connection.node.uow.run(dissolve)
    await _membership_changed(command.group_id, connection)
    return Done()


async def mute_member(command: MuteMember, *, connection: Connection) -> Done:
    me = connection.user

    def mute(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, command.user_id)
        assert standing.target is not None
        check_permitted(standing.actor.role, Action.MUTE, standing.target.role)
        tx.groups.set_muted(command.group_id, command.user_id, command.until)

    await connection.node.uow.run(mute)
    await _membership_changed(command.group_id, connection)
    return Done()


async def update_group(command: UpdateGroup, *, connection: Connection) -> Done:
    me = connection.user

    def update(tx: Transaction) -> None:
        standing = _standing(tx, command.group_id, me.id, None)
        check_permitted(standing.actor.role, Action.UPDATE)
        tx.groups.update(command.group_id, command.name, command.description)

    await connection.node.uow.run(update)
    await _membership_changed(command.group_id, connection)
    return Done()


async def _membership_changed(group_id: int, connection: Connection) -> None:
    connection.node.groups.forget(group_id)
    await connection.node.bus.forget_group(group_id)
