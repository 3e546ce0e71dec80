"""The inbox as the user reads it: SYNC (everything after a pos), HISTORY (one conversation,
a page at a time) and READ (how far the user has read, shared by their devices)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.application.commands import History, Read, Sync
from chatserver.application.results import Done, HistoryPage, Synced
from chatserver.domain.errors import NotAMember, UnknownGroup, UnknownUser
from chatserver.domain.messages import ReadNotice
from chatserver.domain.ports import Transaction

if TYPE_CHECKING:
    from chatserver.application.connection import Connection


async def sync(command: Sync, *, connection: Connection) -> Synced:
    user_id = connection.user.id

    def read(tx: Transaction) -> Synced:
        inbox = tx.inbox
        last = inbox.last_pos(user_id)
        msgs = inbox.after(user_id, command.since, command.limit)
        truncated = command.since < last and command.since + 1 < inbox.oldest_pos(user_id)
        return Synced(tuple(msgs), last, truncated)

    return await connection.node.uow.run(read)


async def history(command: History, *, connection: Connection) -> HistoryPage:
    user_id = connection.user.id
    peer_id, group_id = command.with_user, command.group_id

    def read(tx: Transaction) -> HistoryPage:
        # A deleted account's messages stay in others' inboxes (as from "deleted user"): its
        # conversation stays readable. An id with none in this inbox is no user (errno 4).
        if (peer_id is not None and tx.users.get(peer_id) is None
                and not tx.inbox.conversation(user_id, peer_id=peer_id, group_id=None,
                                              before=None, limit=1)):
            raise UnknownUser()
        if group_id is not None:
            if tx.groups.get(group_id) is None:
                raise UnknownGroup()
            if all(m.user.id != user_id for m in tx.groups.members(group_id)):
                raise NotAMember()
        page = tx.inbox.conversation(
            user_id,
            peer_id=peer_id,
            group_id=group_id,
            before=command.before,
            limit=command.limit + 1,
        )
        more = len(page) > command.limit
        return HistoryPage(tuple(page[1:] if more else page), more)

    return await connection.node.uow.run(read)


async def read(command: Read, *, connection: Connection) -> Done:
    session = connection.require_session()
    node = connection.node
    user_id = session.user.id
    kept = await node.writer.set_read(user_id, command.pos)
    if kept is not None:
        notice = ReadNotice(kept)
        for other in list(node.sessions.of(user_id).values()):
            if other is not session:
                other.push(notice)
        await node.router.notify_elsewhere([user_id], notice)
    return Done()
