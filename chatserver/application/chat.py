"""Chat: one-to-one and group messages, and receipts for what a client has shown."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatserver.application.commands import Receipt, SendDirectMessage, SendGroupMessage
from chatserver.application.results import Done, MessageAccepted
from chatserver.domain.errors import NotAMember
from chatserver.domain.messages import DirectMessage, GroupMessage
from chatserver.domain.ports import Transaction

if TYPE_CHECKING:
    from chatserver.application.connection import Connection

log = logging.getLogger("chatserver.chat")


async def send_direct_message(
    command: SendDirectMessage, *, connection: Connection
) -> MessageAccepted:
    me = connection.user
    node = connection.node
    msg_id = node.message_ids.take()
    if msg_id is None:
        msg_id = await node.message_ids.next()
    message = DirectMessage(
        msg_id=msg_id,
        sender_id=me.id,
        sender_name=me.name,
        recipient_id=command.recipient_id,
        text=command.text,
        sent_at_ms=node.clock.now_ms(),
    )
    router = node.router
    if not router.deliver_now(command.recipient_id, message):  # most often: no waiting
        await router.deliver_elsewhere(command.recipient_id, message, known_user=False)
    return MessageAccepted(msg_id)


async def send_group_message(
    command: SendGroupMessage, *, connection: Connection
) -> MessageAccepted:
    me = connection.user
    node = connection.node
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
    recipients = [uid for uid in roster.members if uid != me.id]
    not_stored = await node.router.deliver_to_many(recipients, message)
    if not_stored:
        log.warning("group message not stored for users whose stored messages are full: "
                    "msg_id=%d group=%d sender=%d users=%s", message.msg_id,
                    command.group_id, me.id, not_stored)
    return MessageAccepted(message.msg_id, tuple(not_stored))


async def receipt(command: Receipt, *, connection: Connection) -> Done:
    session = connection.require_session()
    node = connection.node
    user_id = session.user.id
    stored = session.receipt(command.msg_ids)
    if stored:

        def forget(tx: Transaction) -> None:
            tx.messages.delete(user_id, stored)

        await node.uow.run(forget)
    for origin, msg_ids in session.take_origins(command.msg_ids).items():
        await node.bus.confirm(origin, user_id, msg_ids)
    return Done()
