"""Chat: one-to-one and group messages, and receipts for what a client has shown.

A message is kept in every recipient's inbox and in the sender's (a carbon, for their other
devices) before the sender's ACK, which carries its pos in the sender's inbox.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatserver.application.commands import Receipt, SendDirectMessage, SendGroupMessage
from chatserver.application.results import Done, MessageAccepted
from chatserver.domain.errors import NotAMember
from chatserver.domain.messages import DirectMessage, GroupMessage

if TYPE_CHECKING:
    from chatserver.application.connection import Connection

log = logging.getLogger("chatserver.chat")


async def send_direct_message(
    command: SendDirectMessage, *, connection: Connection
) -> MessageAccepted:
    session = connection.require_session()
    me = session.user
    node = connection.node
    turns = connection.turns
    ticket = turns.take()
    try:
        msg_id = node.message_ids.take()
        if msg_id is None:
            msg_id = await node.message_ids.next()
        recipient_id = command.recipient_id
        message = DirectMessage(
            msg_id=msg_id,
            sender_id=me.id,
            sender_name=me.name,
            recipient_id=recipient_id,
            text=command.text,
            sent_at_ms=node.clock.now_ms(),
        )
        if not turns.mine(ticket):
            await turns.wait(ticket)
        if recipient_id == me.id:  # a message to yourself takes one pos
            own_index = 0
            delivered = node.router.deliver([(me.id, message)], own=session)
        else:
            own_index = 1
            delivered = node.router.deliver(
                [(recipient_id, message), (me.id, message)], own=session, check_user=recipient_id
            )
    finally:
        turns.done(ticket)
    own_pos = (await delivered)[own_index]
    await session.reached(own_pos)
    return MessageAccepted(msg_id, pos=own_pos)


async def send_group_message(
    command: SendGroupMessage, *, connection: Connection
) -> MessageAccepted:
    session = connection.require_session()
    me = session.user
    node = connection.node
    turns = connection.turns
    ticket = turns.take()
    try:
        roster = await node.groups.roster(command.group_id)
        if me.id not in roster.members:
            raise NotAMember()
        msg_id = node.message_ids.take()
        if msg_id is None:
            msg_id = await node.message_ids.next()
        message = GroupMessage(
            msg_id=msg_id,
            group_id=command.group_id,
            sender_id=me.id,
            sender_name=me.name,
            text=command.text,
            sent_at_ms=node.clock.now_ms(),
        )
        entries = [(uid, message) for uid in roster.members if uid != me.id]
        entries.append((me.id, message))
        if not turns.mine(ticket):
            await turns.wait(ticket)
        delivered = node.router.deliver(entries, own=session)
    finally:
        turns.done(ticket)
    own_pos = (await delivered)[-1]
    await session.reached(own_pos)
    return MessageAccepted(message.msg_id, pos=own_pos)


async def receipt(command: Receipt, *, connection: Connection) -> Done:
    session = connection.require_session()
    if session.receipt(command.msg_ids):
        await connection.node.writer.set_mark(session.user.id, session.device, session.mark())
    return Done()
