"""Chat: one-to-one and group messages, and receipts for what a client has shown.

A message is kept in every recipient's inbox and in the sender's (a carbon, for their other
devices) before the sender's ACK, which carries its pos in the sender's inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from chatserver.application import files
from chatserver.application.commands import Receipt, SendDirectMessage, SendGroupMessage
from chatserver.application.hooks import Outgoing, check_before_send
from chatserver.application.results import Done, MessageAccepted
from chatserver.application.strangers import check_group_fan_out, check_stranger
from chatserver.domain.errors import ChatError, Muted, NotAMember, NotPermitted
from chatserver.domain.messages import Delivery, DirectMessage, GroupMessage

if TYPE_CHECKING:
    from chatserver.application.connection import Connection
    from chatserver.application.sessions import Session

log = logging.getLogger("chatserver.chat")


async def send_direct_message(
    command: SendDirectMessage, *, connection: Connection
) -> MessageAccepted:
    session = connection.require_session()
    blocked = command.recipient_id in session.blocked_by
    if blocked and command.file_id is None:
        raise NotPermitted()
    me = session.user
    node = connection.node
    turns = connection.turns
    ticket = turns.take()
    try:
        attached = None
        if command.file_id is not None:
            # A file that cannot be sent is errno 7, first of all faults (PROTOCOL.md).
            attached = await files.attachment(node, me.id, command.file_id)
            if blocked:
                raise NotPermitted()
        recipient_id = command.recipient_id
        if recipient_id not in session.friend_ids:
            await check_stranger(
                session, recipient_id, gate=node.strangers, here=node.sessions, uow=node.uow,
                clock=node.clock,
            )
        text = command.text
        before_send = node.before_send
        if before_send is not None:
            outgoing = Outgoing(me, text, recipient_id=recipient_id)
            text = await check_before_send(node.hooks, before_send, outgoing)
        msg_id = node.message_ids.take()
        if msg_id is None:
            msg_id = await node.message_ids.next()
        message = DirectMessage(
            msg_id=msg_id,
            sender_id=me.id,
            sender_name=me.name,
            recipient_id=recipient_id,
            text=text,
            sent_at_ms=node.clock.now_ms(),
            file=attached,
        )
        if attached is not None:
            await files.refer(node, attached, msg_id, recipient_id=recipient_id)
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


Answer = Callable[[MessageAccepted | ChatError], None]


def send_direct_message_joining(
    command: SendDirectMessage,
    *,
    connection: Connection,
    answer: Answer,
    lead: Callable[[Coroutine[Any, Any, None]], None] | None = None,
) -> bool:
    """send_direct_message without a coroutine of its own, when that can be done now: the
    message joins the inbox batch being gathered, whose writer calls answer with the result
    right after its commit (one task per batch, not per chat). False, with nothing done, when
    it cannot: no batch being gathered, no message id at hand, or an earlier chat of the
    connection not yet in the inbox queue. With lead, a batch is started when none is
    gathering, and lead is handed its leader's work to run in a task of its own (not one that
    ends with the connection). The session is checked by the caller."""
    node = connection.node
    turns = connection.turns
    writer = node.writer
    gathering = writer.gathering
    if (
        turns.issued != turns.passed
        or (lead is None and not gathering)
        or node.before_send is not None  # the hook is awaited: send_direct_message does it
        or command.file_id is not None  # the file is looked up: send_direct_message does it
    ):
        return False
    session = connection.require_session()
    recipient_id = command.recipient_id
    if recipient_id in session.blocked_by:
        return False  # refused by send_direct_message
    me = session.user
    if (
        recipient_id not in session.friend_ids
        and not node.sessions.of(recipient_id)
        and not node.strangers.known_contact(me.id, recipient_id, node.clock.now_ms() / 1000)
    ):
        return False  # checked by send_direct_message
    msg_id = node.message_ids.take() if lead is None else node.message_ids.take_ahead(lead)
    if msg_id is None:
        return False
    if not gathering:  # lead is not None
        leading = writer.open_batch()
        assert leading is not None and lead is not None
        lead(leading)
    message = DirectMessage(
        msg_id, me.id, me.name, recipient_id, command.text, node.clock.now_ms()
    )
    entries: list[tuple[int, Delivery]]
    if recipient_id == me.id:  # a message to yourself takes one pos
        own_index, check_user, entries = 0, None, [(recipient_id, message)]
    else:
        own_index, check_user = 1, recipient_id
        entries = [(recipient_id, message), (me.id, message)]
    node.router.deliver(
        entries, own=session, check_user=check_user,
        then=_Accepting(answer, session, msg_id, own_index),
    )
    return True


class _Accepting:
    """What a chat that joined a batch does once its batch is committed (Router.deliver's
    then): answer with its msg_id and its pos in the sender's inbox, once the session has had
    every push before that pos. One object per chat, instead of a closure for each step."""

    __slots__ = ("answer", "msg_id", "own_index", "session")

    def __init__(self, answer: Answer, session: Session, msg_id: int, own_index: int) -> None:
        self.answer = answer
        self.session = session
        self.msg_id = msg_id
        self.own_index = own_index

    def __call__(self, outcome: list[int] | ChatError) -> Coroutine[Any, Any, None] | None:
        if isinstance(outcome, ChatError):
            self.answer(outcome)
            return None
        own_pos = outcome[self.own_index]
        next_pos = self.session.next_pos  # Session.has_reached, inline: once per chat
        if next_pos is None or next_pos > own_pos:
            self.answer(MessageAccepted(self.msg_id, pos=own_pos))
            return None
        return self._reached(own_pos)

    async def _reached(self, own_pos: int) -> None:
        await self.session.reached(own_pos)
        self.answer(MessageAccepted(self.msg_id, pos=own_pos))


async def send_group_message(
    command: SendGroupMessage, *, connection: Connection
) -> MessageAccepted:
    session = connection.require_session()
    me = session.user
    node = connection.node
    turns = connection.turns
    ticket = turns.take()
    try:
        attached = None
        if command.file_id is not None:
            # A file that cannot be sent is errno 7, first of all faults (PROTOCOL.md).
            attached = await files.attachment(node, me.id, command.file_id)
        roster = await node.groups.roster(command.group_id)
        member = roster.members.get(me.id)
        if member is None:
            raise NotAMember()
        if member.muted_until and member.muted_until > node.clock.now_ms():
            raise Muted(member.muted_until)
        text = command.text
        before_send = node.before_send
        if before_send is not None:
            outgoing = Outgoing(me, text, group_id=command.group_id)
            text = await check_before_send(node.hooks, before_send, outgoing)
        msg_id = node.message_ids.take()
        if msg_id is None:
            msg_id = await node.message_ids.next()
        message = GroupMessage(
            msg_id=msg_id,
            group_id=command.group_id,
            sender_id=me.id,
            sender_name=me.name,
            text=text,
            sent_at_ms=node.clock.now_ms(),
            file=attached,
        )
        if attached is not None:
            await files.refer(node, attached, msg_id, group_id=command.group_id)
        entries = [(uid, message) for uid in roster.members if uid != me.id]
        entries.append((me.id, message))
        check_group_fan_out(
            node.group_entries, command.group_id, len(entries), node.clock.now_ms() / 1000
        )
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
