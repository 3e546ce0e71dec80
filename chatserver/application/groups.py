"""Groups: create, join, leave."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.application.commands import CreateGroup, JoinGroup, LeaveGroup
from chatserver.application.results import Done, GroupCreated
from chatserver.domain.errors import NotAMember, UnknownGroup
from chatserver.domain.groups import Role
from chatserver.domain.ports import Transaction

if TYPE_CHECKING:
    from chatserver.application.connection import Connection


async def create_group(command: CreateGroup, *, connection: Connection) -> GroupCreated:
    me = connection.user
    group = await connection.node.uow.run(
        lambda tx: tx.groups.create(command.name, command.description, me.id)
    )
    return GroupCreated(group.id)


async def join_group(command: JoinGroup, *, connection: Connection) -> Done:
    me = connection.user
    group_id = command.group_id

    def join(tx: Transaction) -> None:
        if tx.groups.get(group_id) is None:
            raise UnknownGroup()
        tx.groups.add_member(group_id, me.id, Role.NORMAL)

    await connection.node.uow.run(join)
    await _membership_changed(group_id, connection)
    return Done()


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
