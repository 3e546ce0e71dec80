"""Turning results, errors and events into frames: one line of JSON each, ended by LF.

The ONE_CHAT push and the ACK are the hot path: plain dicts handed to orjson.
"""

import time
from collections.abc import Callable
from typing import Any

import orjson
from attrs import evolve

from chatserver.adapters.wire import protocol
from chatserver.adapters.wire.decoding import BadRequest, Request
from chatserver.adapters.wire.errors import BAD_REQUEST, FRAME_TOO_LARGE, OK, errno_and_message
from chatserver.adapters.wire.protocol import Dialect
from chatserver.application.results import (
    Contact,
    DownloadGranted,
    GroupCreated,
    GroupJoined,
    GroupView,
    HistoryPage,
    LoggedIn,
    MessageAccepted,
    Registered,
    Result,
    Synced,
    UploadGranted,
)
from chatserver.domain.errors import Muted, RateLimited
from chatserver.domain.messages import (
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupEvent,
    GroupMessage,
    Kept,
    KickedNotice,
    PresenceNotice,
    ReadNotice,
)

MAX_OFFLINE_IN_LOGIN_ACK = 200

_MODERN = orjson.OPT_APPEND_NEWLINE
# The original server wrote nlohmann::json dumps: keys in alphabetical order.
_LEGACY = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS
_LEGACY_REPLIES = (protocol.LOGIN, protocol.REGISTER)

JsonObject = dict[str, Any]


# Enum attribute access and hashing run Python code on 3.11: the hot path compares with these.
_MODERN_DIALECT = Dialect.MODERN
_LEGACY_DIALECT = Dialect.LEGACY

# Formatted local times by second: live traffic hits the same second over and over.
_time_texts: dict[int, str] = {}
_MAX_TIME_TEXTS = 4096


def _format_time(second: int) -> str:
    if len(_time_texts) >= _MAX_TIME_TEXTS:
        _time_texts.clear()
    text = _time_texts[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return text


def _state(online: bool) -> str:
    return "online" if online else "offline"


# --- events ------------------------------------------------------------------------------


def _file(m: DirectMessage | GroupMessage, obj: JsonObject) -> JsonObject:
    attached = m.file
    if attached is not None:
        obj["file"] = {"id": attached.id, "name": attached.name, "size": attached.size,
                       "mime": attached.mime, "sha256": attached.sha256}
    return obj


def _direct_message(m: DirectMessage) -> JsonObject:
    if m.file is not None:
        return _file(m, _direct_message(evolve(m, file=None)))
    return {
        "msgid": protocol.ONE_CHAT,
        "id": m.sender_id,
        "name": m.sender_name,
        "toid": m.recipient_id,
        "msg": m.text,
        "time": _time_texts.get(m.sent_at_ms // 1000) or _format_time(m.sent_at_ms // 1000),
        "ts": m.sent_at_ms,
        "msg_id": m.msg_id,
    }


def _group_message(m: GroupMessage) -> JsonObject:
    if m.file is not None:
        return _file(m, _group_message(evolve(m, file=None)))
    return {
        "msgid": protocol.GROUP_CHAT,
        "groupid": m.group_id,
        "id": m.sender_id,
        "name": m.sender_name,
        "msg": m.text,
        "time": _time_texts.get(m.sent_at_ms // 1000) or _format_time(m.sent_at_ms // 1000),
        "ts": m.sent_at_ms,
        "msg_id": m.msg_id,
    }


# The original's chat objects, field for field (PROTOCOL.md, legacy dialect (c)): its client
# reads 1,024 bytes at a time, so each extra field brings its crash closer.


def _legacy_direct_message(m: DirectMessage) -> JsonObject:
    return {
        "msgid": protocol.ONE_CHAT,
        "id": m.sender_id,
        "name": m.sender_name,
        "toid": m.recipient_id,
        "msg": m.text,
        "time": _time_texts.get(m.sent_at_ms // 1000) or _format_time(m.sent_at_ms // 1000),
    }


def _legacy_group_message(m: GroupMessage) -> JsonObject:
    return {
        "msgid": protocol.GROUP_CHAT,
        "groupid": m.group_id,
        "id": m.sender_id,
        "name": m.sender_name,
        "msg": m.text,
        "time": _time_texts.get(m.sent_at_ms // 1000) or _format_time(m.sent_at_ms // 1000),
    }


def _friend_answer(a: FriendAnswer) -> JsonObject:
    return {
        "msgid": protocol.FRIEND_RESPONSE,
        "id": a.responder_id,
        "name": a.responder_name,
        "accept": a.accepted,
        "msg_id": a.msg_id,
    }


def _group_event(e: GroupEvent) -> JsonObject:
    obj: JsonObject = {
        "msgid": protocol.GROUP_EVENT,
        "groupid": e.group_id,
        "event": e.event,
        "userid": e.user_id,
        "by": e.by,
        "msg_id": e.msg_id,
        "time": _time_texts.get(e.sent_at_ms // 1000) or _format_time(e.sent_at_ms // 1000),
        "ts": e.sent_at_ms,
    }
    if e.role is not None:
        obj["role"] = e.role
    if e.until is not None:
        obj["until"] = e.until
    if e.group_name is not None:
        obj["groupname"] = e.group_name
    if e.group_description is not None:
        obj["groupdesc"] = e.group_description
    return obj


def _friend_request(n: FriendRequestNotice) -> JsonObject:
    return {"msgid": protocol.FRIEND_REQUEST, "id": n.requester_id, "name": n.requester_name}


def _presence(n: PresenceNotice) -> JsonObject:
    return {"msgid": protocol.PRESENCE, "id": n.user_id, "state": _state(n.online)}


def _kicked(n: KickedNotice) -> JsonObject:
    return {"msgid": protocol.KICKED, "errmsg": n.reason}


def _read(n: ReadNotice) -> JsonObject:
    return {"msgid": protocol.READ, "pos": n.pos}


def _friend_removed(n: FriendRemovedNotice) -> JsonObject:
    return {"msgid": protocol.FRIEND_REMOVED, "id": n.user_id}


EventObjects = dict[type[Any], Callable[[Any], JsonObject]]

_EVENT_OBJECTS: EventObjects = {
    DirectMessage: _direct_message,
    GroupMessage: _group_message,
    FriendAnswer: _friend_answer,
    GroupEvent: _group_event,
    FriendRequestNotice: _friend_request,
    PresenceNotice: _presence,
    KickedNotice: _kicked,
    ReadNotice: _read,
    FriendRemovedNotice: _friend_removed,
}
# The original's clients understand chats only.
_LEGACY_EVENT_OBJECTS: EventObjects = {
    DirectMessage: _legacy_direct_message,
    GroupMessage: _legacy_group_message,
}


def _event_objects(dialect: Dialect) -> EventObjects:
    return _LEGACY_EVENT_OBJECTS if dialect is _LEGACY_DIALECT else _EVENT_OBJECTS


def _option(dialect: Dialect) -> int:
    return _LEGACY if dialect is _LEGACY_DIALECT else _MODERN


# The last event encoded for a modern client, and its frame: a group message goes to every
# member in a row, and is encoded once. Events are immutable, and the one held here cannot be
# freed (and its id reused) while it is held.
_last_encoded: tuple[Event | None, bytes] = (None, b"")


def encode_event(event: Event, dialect: Dialect) -> bytes | None:
    """The frame that pushes ``event`` to a client; None if the dialect has no such message.
    A delivery comes as Kept: the modern dialect adds its ``pos``, the legacy one does not."""
    global _last_encoded
    if type(event) is not Kept:  # a notice (or a delivery kept nowhere: no pos)
        if dialect is _LEGACY_DIALECT:
            to_legacy = _LEGACY_EVENT_OBJECTS.get(type(event))
            return None if to_legacy is None else orjson.dumps(to_legacy(event), option=_LEGACY)
        return orjson.dumps(_EVENT_OBJECTS[type(event)](event), option=_MODERN)
    delivery = event.delivery
    if dialect is _LEGACY_DIALECT:
        to_object = _LEGACY_EVENT_OBJECTS.get(type(delivery))
        return None if to_object is None else orjson.dumps(to_object(delivery), option=_LEGACY)
    last, frame = _last_encoded
    if delivery is not last:
        frame = orjson.dumps(_EVENT_OBJECTS[type(delivery)](delivery), option=_MODERN)
        _last_encoded = (delivery, frame)
    # The delivery's object is the same for every member of a group: only pos differs.
    return frame[:-2] + b',"pos":%d}\n' % event.pos


def _kept_object(kept: Kept) -> JsonObject:
    obj = _EVENT_OBJECTS[type(kept.delivery)](kept.delivery)
    obj["pos"] = kept.pos
    return obj


# --- replies -----------------------------------------------------------------------------


def _reply_head(msgid: int, seq: int | None) -> JsonObject:
    return {"msgid": msgid} if seq is None else {"msgid": msgid, "seq": seq}


def _ack(request_msgid: int, seq: int | None) -> JsonObject:
    """The opening of the reply to a request: LOGIN_MSG_ACK, REG_MSG_ACK, or ACK_MSG."""
    if request_msgid == protocol.LOGIN:
        return _reply_head(protocol.LOGIN_ACK, seq)
    if request_msgid == protocol.REGISTER:
        return _reply_head(protocol.REGISTER_ACK, seq)
    if seq is None:
        return {"msgid": protocol.ACK, "reply_to": request_msgid}
    return {"msgid": protocol.ACK, "seq": seq, "reply_to": request_msgid}


def _error_reply(
    msgid: int,
    seq: int | None,
    errno: int,
    errmsg: str,
    dialect: Dialect,
    extra: JsonObject | None = None,
) -> bytes | None:
    if dialect is _LEGACY_DIALECT and msgid not in _LEGACY_REPLIES:
        return None
    reply = _ack(msgid, seq)
    reply["errno"] = errno
    reply["errmsg"] = errmsg
    if extra:
        reply.update(extra)
    return orjson.dumps(reply, option=_option(dialect))


# The reply to a chat message, the commonest of all, formatted: the bytes orjson would write
# for _ack(...) | {"errno": OK, "msg_id": ..., "pos": ...}, in a fraction of the time. A
# GROUP_CHAT's ACK always lists `not_stored` (PROTOCOL.md Version 2, "Small gaps"), empty
# when every member's copy was kept.
_ACCEPTED = b'{"msgid":%d,"reply_to":%%d,"errno":%d,"msg_id":%%d,"pos":%%d}\n' % (
    protocol.ACK, OK
)
_ACCEPTED_SEQ = b'{"msgid":%d,"seq":%%d,"reply_to":%%d,"errno":%d,"msg_id":%%d,"pos":%%d}\n' % (
    protocol.ACK, OK
)
_ACCEPTED_GROUP = _ACCEPTED[:-2] + b',"not_stored":[]}\n'
_ACCEPTED_GROUP_SEQ = _ACCEPTED_SEQ[:-2] + b',"not_stored":[]}\n'


def encode_result(request: Request, result: Result, dialect: Dialect) -> list[bytes]:
    """The frames answering a request that succeeded: its reply, then for a login any waiting
    messages that did not fit in the reply. The legacy dialect answers LOGIN and REG only."""
    if type(result) is MessageAccepted and not result.not_stored and dialect is _MODERN_DIALECT:
        seq = request.seq
        group = request.msgid == protocol.GROUP_CHAT
        if seq is None:
            template = _ACCEPTED_GROUP if group else _ACCEPTED
            return [template % (request.msgid, result.msg_id, result.pos)]
        template = _ACCEPTED_GROUP_SEQ if group else _ACCEPTED_SEQ
        return [template % (seq, request.msgid, result.msg_id, result.pos)]
    if dialect is _LEGACY_DIALECT and request.msgid not in _LEGACY_REPLIES:
        return []
    reply = _ack(request.msgid, request.seq)
    reply["errno"] = OK
    if type(result) is MessageAccepted:
        reply["msg_id"] = result.msg_id
        reply["pos"] = result.pos
        if result.not_stored or request.msgid == protocol.GROUP_CHAT:
            # group members away with a full store: they miss this one
            reply["not_stored"] = list(result.not_stored)
    elif type(result) is GroupCreated:
        reply["groupid"] = result.group_id
    elif type(result) is GroupJoined:
        reply["group"] = _group(result.view, _members(result.view))
    elif type(result) is Registered:
        reply["id"] = result.user_id
    elif type(result) is LoggedIn:
        return _login_reply(reply, result, dialect)
    elif type(result) is Synced:
        reply["msgs"] = [_kept_object(k) for k in result.msgs]
        reply["last_pos"] = result.last_pos
        reply["truncated"] = result.truncated
    elif type(result) is HistoryPage:
        reply["msgs"] = [_kept_object(k) for k in result.msgs]
        reply["more"] = result.more
    elif type(result) is UploadGranted:
        reply["file_id"] = result.file_id
        reply["upload_url"] = result.upload_url
    elif type(result) is DownloadGranted:
        reply["url"] = result.url
    return [orjson.dumps(reply, option=_option(dialect))]


def encode_error(
    request_or_bad: Request | BadRequest, error: BaseException | None, dialect: Dialect
) -> bytes | None:
    """The reply to a request that failed with ``error`` (None or an unexpected exception
    is an internal error); None when the dialect sends no reply."""
    errno, errmsg = errno_and_message(error)
    msgid = request_or_bad.msgid if isinstance(request_or_bad, Request) else request_or_bad.reply_to
    # A muted member's GROUP_CHAT says until when (errno 13).
    extra = {"until": error.until_ms} if isinstance(error, Muted) else None
    return _error_reply(msgid, request_or_bad.seq, errno, errmsg, dialect, extra)


def encode_bad_request(bad: BadRequest, dialect: Dialect) -> bytes | None:
    """The errno 7 reply to a malformed frame; None when the dialect sends no reply."""
    return _error_reply(bad.reply_to, bad.seq, BAD_REQUEST, bad.message, dialect)


def encode_refusal(message: str) -> bytes:
    """The errno 9 reply sent to a connection refused before its first request."""
    reply = _ack(0, None)
    reply["errno"], reply["errmsg"] = errno_and_message(RateLimited(message))
    return orjson.dumps(reply, option=_MODERN)


def encode_frame_too_large(dialect: Dialect) -> bytes | None:
    """The errno 8 reply sent before closing a connection whose frame was too long."""
    if dialect is _LEGACY_DIALECT:
        return None
    return _error_reply(0, None, FRAME_TOO_LARGE, "frame too large", dialect)


# --- the login reply ---------------------------------------------------------------------


def _contact(contact: Contact) -> JsonObject:
    return {"id": contact.user.id, "name": contact.user.name, "state": _state(contact.online)}


def _group(view: GroupView, members: list[Any]) -> JsonObject:
    return {
        "id": view.group.id,
        "groupname": view.group.name,
        "groupdesc": view.group.description,
        "users": members,
    }


def _members(view: GroupView) -> list[JsonObject]:
    return [
        {
            "id": member.user.id,
            "name": member.user.name,
            "state": _state(member.online),
            "role": member.role.value,
        }
        for member in view.members
    ]


def _login_reply(reply: JsonObject, result: LoggedIn, dialect: Dialect) -> list[bytes]:
    reply["id"] = result.user.id
    reply["name"] = result.user.name
    events = _event_objects(dialect)
    waiting: list[Kept] = [k for k in result.waiting if type(k.delivery) in events]
    waiting_objects = (
        [_kept_object(k) for k in waiting]
        if dialect is _MODERN_DIALECT
        else [events[type(k.delivery)](k.delivery) for k in waiting]
    )
    offline = waiting_objects[:MAX_OFFLINE_IN_LOGIN_ACK]
    friends = [_contact(contact) for contact in result.friends]
    if dialect is _MODERN_DIALECT:
        reply["last_pos"] = result.last_pos
        reply["read_pos"] = result.read_pos
        reply["friends"] = friends
        reply["groups"] = [_group(view, _members(view)) for view in result.groups]
        reply["offlinemsg"] = offline
        reply["friend_requests"] = [{"id": u.id, "name": u.name} for u in result.friend_requests]
        reply["blocked"] = list(result.blocked)
    else:
        groups = [_group(view, _json_strings(_members(view))) for view in result.groups]
        # The original sent its lists as arrays of JSON texts, and left out the empty ones.
        for key, objects in (("friends", friends), ("groups", groups), ("offlinemsg", offline)):
            if objects:
                reply[key] = _json_strings(objects)
    option = _option(dialect)
    later = waiting_objects[len(offline) :]
    return [orjson.dumps(reply, option=option), *(orjson.dumps(o, option=option) for o in later)]


def _json_strings(objects: list[JsonObject]) -> list[str]:
    return [orjson.dumps(o, option=orjson.OPT_SORT_KEYS).decode() for o in objects]
