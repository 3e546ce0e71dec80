"""Groups: create, join, leave."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.application.commands import CreateGroup, JoinGroup, LeaveGroup
from chatserver.application.results import (
    Done,
    GroupCreated,
    GroupJoined,
    GroupMemberView,
    GroupView,
)
from chatserver.domain.errors import NotAMember, RateLimited, UnknownGroup
from chatserver.domain.groups import Group, Member, Role
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

    def join(tx: Transaction) -> tuple[Group, list[Member]]:
        group = tx.groups.get(group_id)
        if group is None:
            raise UnknownGroup()
        members = tx.groups.members(group_id)
        if not any(m.user.id == me.id for m in members):
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


async def leave_group(command: LeaveGroup, *, connection: Connection) -> Done:
    me = connection.user
    group_id = command.group_id

    def leave(tx: Transaction) -> None:
        if tx.groups.get(group_id) is None:
            raise UnknownGroup()
        if not tx.groups.remove_member(group_id, me.id):
            raise NotAMember()

    await connection.node.uow.run(leave)
    await _membership_changed(group_id, connection)
    return Done()


async def _membership_changed(group_id: int, connection: Connection) -> None:
    connection.node.groups.forget(group_id)
    await connection.node.bus.forget_group(group_id)
