"""An async client for the chatserver wire protocol (PROTOCOL.md), for bots, tests and the terminal.

    async with connect("127.0.0.1", 6000) as client:
        login = await client.login("alice", "s3cret", device="laptop")
        sent = await client.send_chat(2, "hi bob")  # the msg_id, with .pos
        page = await client.history(with_user=2)  # the newest messages with user 2
        async for event in client.events():
            ...

``connect(..., tls=True)`` speaks TLS (the server's ``--tls-cert``), checking the server's
certificate against the system's trust store, or ``tls=ssl.create_default_context(cafile=...)``
against a CA or a self-signed certificate of your own.

Every request carries a fresh ``seq`` and waits, at most ``request_timeout`` seconds, for the
reply that echoes it; a reader task owned by the ``connect`` block routes replies to their
waiters and everything else, parsed into the event classes below, to ``events()``.
"""

from __future__ import annotations

import hashlib
import itertools
import mimetypes
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from enum import IntEnum
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from attrs import define, field, frozen

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_EVENT_BUFFER = 1024
# A login reply carries up to 200 stored messages of up to 4,096 characters each.
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
DEFAULT_DEVICE = "default"


class MsgId(IntEnum):
    """The message numbers of the wire protocol."""

    LOGIN = 1
    LOGIN_ACK = 2
    LOGOUT = 3
    REGISTER = 4
    REGISTER_ACK = 5
    ONE_CHAT = 6
    ADD_FRIEND = 7
    CREATE_GROUP = 8
    ADD_GROUP = 9
    GROUP_CHAT = 10
    ACK = 11
    FRIEND_REQUEST = 12
    FRIEND_RESPONSE = 13
    PRESENCE = 14
    KICKED = 15
    PING = 16
    LEAVE_GROUP = 17
    REMOVE_FRIEND = 18
    RECEIPT = 19
    SYNC = 20
    HISTORY = 21
    READ = 22
    GROUP_KICK = 23
    GROUP_ROLE = 24
    GROUP_TRANSFER = 25
    GROUP_DISSOLVE = 26
    GROUP_MUTE = 27
    GROUP_UPDATE = 28
    GROUP_EVENT = 29
    BLOCK = 30
    FRIEND_REMOVED = 31
    ACCOUNT = 32
    FILE_UPLOAD = 33
    FILE_URL = 34


REPLIES = frozenset({MsgId.LOGIN_ACK, MsgId.REGISTER_ACK, MsgId.ACK})


class ChatError(Exception):
    """The server answered a request with a non-zero errno; ``until`` (ms since the epoch) is
    when a mute ends, for errno 13 (muted in that group)."""

    def __init__(self, errno: int, errmsg: str, until: int | None = None) -> None:
        super().__init__(errno, errmsg)
        self.errno = errno
        self.errmsg = errmsg
        self.until = until

    def __str__(self) -> str:
        return f"{self.errmsg} (errno {self.errno})"


class ConnectionLost(ConnectionError):
    """The connection to the server is gone; no more replies or events will come."""


class TLSHandshakeError(ConnectionError):
    """``connect(..., tls=...)`` could not set up TLS: the server's certificate is not trusted
    or not for that host name (``untrusted``), or the port does not speak TLS. ``reason`` says
    which, without the address."""

    def __init__(self, address: str, reason: str, *, untrusted: bool) -> None:
        super().__init__(f"TLS handshake with {address} failed: {reason}")
        self.reason = reason
        self.untrusted = untrusted


@frozen
class Attachment:
    """A file a chat message carries: ``download(id, ...)`` fetches it."""

    id: int
    name: str
    size: int
    mime: str
    sha256: str


@frozen
class DirectMessage:
    """A one-to-one chat message to this user, or (``sender_id`` is this user's) one this user
    sent from another device; ``pos`` is its place in this user's inbox (None from a server
    that keeps no inbox)."""

    msg_id: int
    sender_id: int
    sender_name: str
    recipient_id: int
    text: str
    time: str
    sent_at_ms: int
    pos: int | None = None
    file: Attachment | None = None


@frozen
class GroupMessage:
    """A chat message in a group this user belongs to (this user's own, from another device,
    when ``sender_id`` is this user's); ``pos`` as for DirectMessage."""

    msg_id: int
    group_id: int
    sender_id: int
    sender_name: str
    text: str
    time: str
    sent_at_ms: int
    pos: int | None = None
    file: Attachment | None = None


@frozen
class FriendAnswer:
    """Another user's answer to this user's friend request; ``pos`` as for DirectMessage."""

    msg_id: int
    responder_id: int
    responder_name: str
    accepted: bool
    pos: int | None = None


@frozen
class GroupEvent:
    """Something that happened to one of the user's groups (GROUP_EVENT_MSG): `event` is one of
    joined, left, kicked, role, transfer, muted, updated, dissolved; `by` acted on `user_id`."""

    msg_id: int
    group_id: int
    event: str
    user_id: int
    by: int
    pos: int = 0
    role: str | None = None
    until: int | None = None
    group_name: str | None = None
    group_description: str | None = None


@frozen
class FriendRequest:
    """A user asking to become this user's friend."""

    requester_id: int
    requester_name: str


@frozen
class Presence:
    """A friend came online or went offline."""

    user_id: int
    online: bool


@frozen
class Kicked:
    """This session was ended by a newer login of the same user; the connection stays open."""

    reason: str


@frozen
class Read:
    """Another session of this user has read everything up to ``pos`` (READ_MSG)."""

    pos: int


@frozen
class FriendRemoved:
    """The friendship with ``user_id`` ended (FRIEND_REMOVED_MSG, Version 2)."""

    user_id: int


@frozen
class UnknownFrame:
    """A frame from the server that this library does not understand, kept as it came.

    Newer servers push objects this library does not know yet: ignore them. ``pos`` is their
    place in the inbox when they have one (a GROUP_EVENT does), so that a client syncing by
    position does not take them for a gap.
    """

    frame: dict[str, Any]

    @property
    def pos(self) -> int | None:
        pos = self.frame.get("pos")
        return pos if type(pos) is int else None


Delivery = DirectMessage | GroupMessage | FriendAnswer | GroupEvent
Notice = FriendRequest | Presence | Kicked | Read | FriendRemoved
Event = Delivery | Notice | UnknownFrame
Kept = Delivery | UnknownFrame  # what the inbox keeps: what LOGIN, SYNC and HISTORY return


class Sent(int):
    """What sending a chat returns: the message's msg_id, as an int (code written when the send
    returned a plain int keeps working: it compares, hashes and prints as the msg_id), and
    ``pos``, the message's place in the sender's own inbox (the ACK's ``pos``; None from a
    server that keeps no inbox)."""

    pos: int | None

    def __new__(cls, msg_id: int, pos: int | None = None) -> Sent:
        sent = super().__new__(cls, msg_id)
        sent.pos = pos
        return sent

    @property
    def msg_id(self) -> int:
        return int(self)

    def __str__(self) -> str:  # prints as the msg_id did
        return str(int(self))

    def __repr__(self) -> str:
        return f"Sent(msg_id={int(self)}, pos={self.pos})"


@frozen
class SyncResult:
    """SYNC's answer: the kept objects after ``since`` in pos order, the newest pos, and
    ``truncated`` when some after ``since`` have left the history window."""

    messages: tuple[Kept, ...]
    last_pos: int
    truncated: bool = False


@frozen
class HistoryPage:
    """One page of a conversation, oldest first; ``more`` when older ones exist (ask again
    with ``before`` set to the first one's pos)."""

    messages: tuple[Kept, ...]
    more: bool

    @property
    def first_pos(self) -> int | None:
        """The pos to pass as ``before`` for the page older than this one."""
        return pos_of(self.messages[0]) if self.messages else None


@frozen
class Friend:
    """A friend as listed at login."""

    id: int
    name: str
    online: bool


@frozen
class GroupMember:
    """A member of a group as listed at login; ``role`` is "creator", "admin" or "normal"."""

    id: int
    name: str
    online: bool
    role: str


@frozen
class Group:
    """A group this user belongs to, as listed at login."""

    id: int
    name: str
    description: str
    members: tuple[GroupMember, ...]


@frozen
class LoginResult:
    """What the server tells a user who logs in."""

    user_id: int
    name: str
    friends: tuple[Friend, ...]
    groups: tuple[Group, ...]
    offline_messages: tuple[Kept, ...]
    friend_requests: tuple[FriendRequest, ...]
    # The newest pos in this user's inbox, and how far the user has read (READ); None from a
    # server that keeps no inbox.
    last_pos: int | None = None
    read_pos: int | None = None
    blocked: tuple[int, ...] = ()  # the users this user has blocked (BLOCK, Version 2)


def pos_of(event: Event) -> int | None:
    """The event's place in this user's inbox, if it has one."""
    return event.pos if isinstance(event, Kept) else None


def _optional_int(value: Any) -> int | None:
    return value if type(value) is int else None


def _direct_message(frame: dict[str, Any]) -> DirectMessage:
    return DirectMessage(
        msg_id=frame["msg_id"],
        sender_id=frame["id"],
        sender_name=frame["name"],
        recipient_id=frame["toid"],
        text=frame["msg"],
        time=frame["time"],
        sent_at_ms=frame["ts"],
        pos=_optional_int(frame.get("pos")),
        file=_attachment(frame.get("file")),
    )


def _attachment(value: Any) -> Attachment | None:
    if not isinstance(value, dict):
        return None
    return Attachment(value["id"], value["name"], value["size"], value["mime"], value["sha256"])


def _group_message(frame: dict[str, Any]) -> GroupMessage:
    return GroupMessage(
        msg_id=frame["msg_id"],
        group_id=frame["groupid"],
        sender_id=frame["id"],
        sender_name=frame["name"],
        text=frame["msg"],
        time=frame["time"],
        sent_at_ms=frame["ts"],
        pos=_optional_int(frame.get("pos")),
        file=_attachment(frame.get("file")),
    )


def _friend_answer(frame: dict[str, Any]) -> FriendAnswer:
    pos = _optional_int(frame.get("pos"))
    return FriendAnswer(frame["msg_id"], frame["id"], frame["name"], frame["accept"], pos)


def _group_event(frame: dict[str, Any]) -> GroupEvent:
    return GroupEvent(
        frame["msg_id"],
        frame["groupid"],
        frame["event"],
        frame["userid"],
        frame["by"],
        frame.get("pos", 0),
        frame.get("role"),
        frame.get("until"),
        frame.get("groupname"),
        frame.get("groupdesc"),
    )


EVENT_PARSERS: dict[int, Callable[[dict[str, Any]], Event]] = {
    MsgId.ONE_CHAT: _direct_message,
    MsgId.GROUP_CHAT: _group_message,
    MsgId.FRIEND_RESPONSE: _friend_answer,
    MsgId.GROUP_EVENT: _group_event,
    MsgId.FRIEND_REQUEST: lambda frame: FriendRequest(frame["id"], frame["name"]),
    MsgId.PRESENCE: lambda frame: Presence(frame["id"], frame["state"] == "online"),
    MsgId.KICKED: lambda frame: Kicked(frame.get("errmsg", "")),
    MsgId.READ: lambda frame: Read(frame["pos"]),
    MsgId.FRIEND_REMOVED: lambda frame: FriendRemoved(frame["id"]),
}


def parse_event(frame: dict[str, Any]) -> Event:
    """Turns a frame pushed by the server into an event; anything unexpected is an UnknownFrame."""
    parser = EVENT_PARSERS.get(frame.get("msgid", 0))
    try:
        return parser(frame) if parser else UnknownFrame(frame)
    except (KeyError, TypeError):
        return UnknownFrame(frame)


def parse_kept(frame: Any) -> Kept:
    """Turns an object kept in the inbox (in offlinemsg, SYNC, HISTORY) into a delivery."""
    if not isinstance(frame, dict):
        return UnknownFrame({"value": frame})
    event = parse_event(frame)
    return event if isinstance(event, Delivery) else UnknownFrame(frame)


def _kept_list(reply: dict[str, Any]) -> tuple[Kept, ...]:
    msgs = reply.get("msgs")
    return tuple(parse_kept(m) for m in msgs) if isinstance(msgs, list) else ()


def parse_login(reply: dict[str, Any]) -> LoginResult:
    """Turns a successful LOGIN_MSG_ACK into a LoginResult."""
    return LoginResult(
        user_id=reply["id"],
        name=reply["name"],
        friends=tuple(
            Friend(f["id"], f["name"], f["state"] == "online") for f in reply.get("friends", ())
        ),
        groups=tuple(
            Group(
                id=g["id"],
                name=g["groupname"],
                description=g.get("groupdesc", ""),
                members=tuple(
                    GroupMember(u["id"], u["name"], u["state"] == "online", u["role"])
                    for u in g.get("users", ())
                ),
            )
            for g in reply.get("groups", ())
        ),
        offline_messages=tuple(parse_kept(m) for m in reply.get("offlinemsg", ())),
        friend_requests=tuple(
            FriendRequest(r["id"], r["name"]) for r in reply.get("friend_requests", ())
        ),
        last_pos=_optional_int(reply.get("last_pos")),
        read_pos=_optional_int(reply.get("read_pos")),
        blocked=tuple(u for u in reply.get("blocked", ()) if type(u) is int),
    )


@define
class _Waiter:
    """A request waiting for its reply; ``reply`` stays None if the connection is lost."""

    done: anyio.Event = field(factory=anyio.Event)
    reply: dict[str, Any] | None = None


class ChatClient:
    """One connection to a chat server; get one from ``connect``."""

    def __init__(
        self,
        stream: ByteStream,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        event_buffer: int = DEFAULT_EVENT_BUFFER,
        max_frame: int = DEFAULT_MAX_FRAME,
        web_url: str | None = None,
        web_tls: ssl.SSLContext | None = None,
        web_server_hostname: str | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        # The server's web port (http://host:port, or https:// with TLS), where files go up
        # and come down; over https, web_tls checks its certificate, for web_server_hostname
        # (None: the URL's host).
        self.web_url = web_url
        self._web_tls = web_tls
        self._web_server_hostname = web_server_hostname
        self._stream = stream
        self._max_frame = max_frame
        self._send_lock = anyio.Lock()
        self._seqs = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._event_sender, self._event_receiver = anyio.create_memory_object_stream[Event](
            event_buffer
        )
        self._lost = False

    @property
    def connected(self) -> bool:
        """False once the server has closed the connection."""
        return not self._lost

    async def register(self, name: str, password: str) -> int:
        """Creates an account and returns its user id."""
        reply = await self.request(MsgId.REGISTER, name=name, password=password)
        return int(reply["id"])

    async def login(
        self,
        user: int | str,
        password: str,
        *,
        receipts: bool = True,
        device: str = DEFAULT_DEVICE,
        since: int | None = None,
    ) -> LoginResult:
        """Logs in by user id (int) or name; with receipts, the caller ``receipt``s deliveries.

        ``device`` names this install of the client program (1-64 characters): a login on the
        same device takes over its session, sessions on other devices go on. With ``since``,
        the device already has every pos up to it: ``offline_messages`` holds what follows.
        """
        who = {"id": user} if isinstance(user, int) else {"name": user}
        fields: dict[str, Any] = {"password": password, "receipts": receipts, "device": device}
        if since is not None:
            fields["since"] = since
        reply = await self.request(MsgId.LOGIN, **who, **fields)
        return parse_login(reply)

    async def logout(self) -> None:
        await self.request(MsgId.LOGOUT)

    async def send_chat(self, to_id: int, text: str) -> Sent:
        """Sends a one-to-one message; returns its msg_id (an int) with its ``pos``."""
        reply = await self.request(MsgId.ONE_CHAT, toid=to_id, msg=text)
        return Sent(int(reply["msg_id"]), _optional_int(reply.get("pos")))

    async def add_friend(self, friend_id: int) -> None:
        """Sends a friend request (or accepts theirs, if they already asked)."""
        await self.request(MsgId.ADD_FRIEND, friendid=friend_id)

    async def answer_friend(self, friend_id: int, accept: bool) -> None:
        """Accepts or declines the friend request of ``friend_id``."""
        await self.request(MsgId.FRIEND_RESPONSE, friendid=friend_id, accept=accept)

    async def remove_friend(self, friend_id: int) -> None:
        await self.request(MsgId.REMOVE_FRIEND, friendid=friend_id)

    async def create_group(self, name: str, description: str = "") -> int:
        """Creates a group with this user as its creator and returns the group id."""
        reply = await self.request(MsgId.CREATE_GROUP, groupname=name, groupdesc=description)
        return int(reply["groupid"])

    async def join_group(self, group_id: int) -> None:
        await self.request(MsgId.ADD_GROUP, groupid=group_id)

    async def leave_group(self, group_id: int) -> None:
        await self.request(MsgId.LEAVE_GROUP, groupid=group_id)

    async def send_group_chat(self, group_id: int, text: str) -> Sent:
        """Sends a message to every other member of a group; returns its msg_id (an int) with
        its ``pos``."""
        reply = await self.request(MsgId.GROUP_CHAT, groupid=group_id, msg=text)
        return Sent(int(reply["msg_id"]), _optional_int(reply.get("pos")))

    async def kick(self, group_id: int, user_id: int) -> None:
        """Removes a member of a lower role from the group (creator or admin)."""
        await self.request(MsgId.GROUP_KICK, groupid=group_id, userid=user_id)

    async def set_role(self, group_id: int, user_id: int, role: str) -> None:
        """Makes a member "admin" or "normal" again (creator only)."""
        await self.request(MsgId.GROUP_ROLE, groupid=group_id, userid=user_id, role=role)

    async def transfer_group(self, group_id: int, user_id: int) -> None:
        """Hands the group to a member, who becomes its creator; this user becomes an admin."""
        await self.request(MsgId.GROUP_TRANSFER, groupid=group_id, userid=user_id)

    async def dissolve_group(self, group_id: int) -> None:
        """Ends the group for every member and frees its name (creator only)."""
        await self.request(MsgId.GROUP_DISSOLVE, groupid=group_id)

    async def mute(self, group_id: int, user_id: int, until_ms: int) -> None:
        """Keeps a member of a lower role from chatting in the group until ``until_ms`` (ms since
        the epoch); 0 unmutes."""
        await self.request(MsgId.GROUP_MUTE, groupid=group_id, userid=user_id, until=until_ms)

    async def unmute(self, group_id: int, user_id: int) -> None:
        await self.mute(group_id, user_id, 0)

    async def update_group(
        self, group_id: int, *, name: str | None = None, description: str | None = None
    ) -> None:
        """Renames the group or changes its description, or both (creator or admin)."""
        if name is None and description is None:
            raise ValueError("update_group needs a name or a description")
        fields: dict[str, Any] = {"groupid": group_id}
        if name is not None:
            fields["groupname"] = name
        if description is not None:
            fields["groupdesc"] = description
        await self.request(MsgId.GROUP_UPDATE, **fields)

    async def block(self, user_id: int) -> None:
        """Blocks a user: ends any friendship, and their chats and requests no longer arrive."""
        await self.request(MsgId.BLOCK, userid=user_id, block=True)

    async def unblock(self, user_id: int) -> None:
        await self.request(MsgId.BLOCK, userid=user_id, block=False)

    async def change_password(self, password: str, new_password: str) -> None:
        """Changes this user's password; the user's other sessions end (KICKED)."""
        await self.request(
            MsgId.ACCOUNT, action="password", password=password, new_password=new_password
        )

    async def delete_account(self, password: str) -> None:
        """Deletes this user's account for good; this session is then logged out."""
        await self.request(MsgId.ACCOUNT, action="delete", password=password)

    async def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        to_id: int | None = None,
        group_id: int | None = None,
        text: str = "",
        mime: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Sent:
        """Uploads a file (streamed from disk) and sends it in a chat to ``to_id`` or to the
        group ``group_id``, with ``text`` beside it; returns the chat's msg_id with its pos.
        ``progress(sent, total)`` is called as the bytes go. Needs ``web_url``.

        FILE_UPLOAD names no recipient, so the recipient is checked first, with a HISTORY of
        one message: an unknown user (ChatError 4), an unknown group (5) or one this user is
        not in (6) is refused before a byte is sent, as is a file over the size limit or the
        quota (14, by FILE_UPLOAD). A chat the server refuses for other reasons (a recipient
        who blocks this user: 12; muted in the group: 13) is only known once the bytes are
        up, as the chat is sent after the upload; the server forgets a file no message
        carries a day after it was asked for."""
        if (to_id is None) == (group_id is None):
            raise ValueError("send_file: give to_id or group_id")
        file = Path(path)
        size = (await anyio.Path(file).stat()).st_size
        kind = mime or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        await self.history(with_user=to_id, group_id=group_id, limit=1)  # errno 4, 5, 6
        granted = await self.request(MsgId.FILE_UPLOAD, name=file.name, size=size, mime=kind)
        await self._put(str(granted["upload_url"]), file, size, progress)
        attached = {"msg": text, "file": granted["file_id"]}
        if to_id is not None:
            reply = await self.request(MsgId.ONE_CHAT, toid=to_id, **attached)
        else:
            reply = await self.request(MsgId.GROUP_CHAT, groupid=group_id, **attached)
        return Sent(int(reply["msg_id"]), _optional_int(reply.get("pos")))

    async def download(
        self,
        file: Attachment,
        directory: str | os.PathLike[str] = ".",
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Downloads a file a chat carried into ``directory`` (under its name, made safe),
        streamed to disk and checked against its sha256; returns where it went."""
        granted = await self.request(MsgId.FILE_URL, file_id=file.id)
        await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
        target = Path(directory) / (Path(file.name).name.lstrip(".") or f"file-{file.id}")
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        done = 0
        async with aiohttp.ClientSession(self._web_url()) as http, http.get(
            str(granted["url"]), **self._tls_settings()
        ) as response:
            if response.status != 200:
                raise ChatError(14 if response.status == 413 else 11,
                                f"download failed: HTTP {response.status}")
            async with await anyio.open_file(partial, "wb") as out:
                async for chunk in response.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
                    await out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, file.size)
        if digest.hexdigest() != file.sha256:
            await anyio.Path(partial).unlink()
            raise ChatError(11, "download failed: the bytes are not the file's (sha256)")
        await anyio.Path(partial).replace(target)
        return target

    def _web_url(self) -> str:
        if self.web_url is None:
            raise ValueError("files need the server's web port: connect(..., web_port=...)")
        return self.web_url

    def _tls_settings(self) -> dict[str, Any]:
        """aiohttp's settings for a request to the web port: its TLS, when it has one."""
        if self._web_tls is None:
            return {}
        settings: dict[str, Any] = {"ssl": self._web_tls}
        if self._web_server_hostname is not None:
            settings["server_hostname"] = self._web_server_hostname
        return settings

    async def _put(
        self, url: str, file: Path, size: int, progress: Callable[[int, int], None] | None
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            async with await anyio.open_file(file, "rb") as source:
                while chunk := await source.read(256 * 1024):
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, size)
                    yield chunk

        headers = {"Content-Length": str(size)}
        async with aiohttp.ClientSession(self._web_url()) as http, http.put(
            url, data=chunks(), headers=headers, **self._tls_settings()
        ) as response:
            if response.status != 201:
                raise ChatError(11, f"upload failed: HTTP {response.status}")

    async def sync(self, since: int, limit: int = 200) -> SyncResult:
        """The kept objects after pos ``since``, at most ``limit`` (1-500), and the newest pos."""
        reply = await self.request(MsgId.SYNC, since=since, limit=limit)
        return SyncResult(
            messages=_kept_list(reply),
            last_pos=_optional_int(reply.get("last_pos")) or 0,
            truncated=reply.get("truncated") is True,
        )

    async def sync_all(self, since: int, limit: int = 200) -> SyncResult:
        """SYNCs page after page from ``since`` until it has the ``last_pos`` of the first
        answer (what arrives after that comes live); ``truncated`` if any page said so."""
        first = await self.sync(since, limit)
        messages, truncated, target = list(first.messages), first.truncated, first.last_pos
        page, reached = first, since
        # Each page must end further on than the one before: a server that answered the same
        # page again would otherwise be asked forever.
        while page.messages and (newest := pos_of(page.messages[-1])) is not None:
            if newest >= target or newest <= reached:
                break
            reached = newest
            page = await self.sync(newest, limit)
            messages.extend(page.messages)
            truncated = truncated or page.truncated
        return SyncResult(tuple(messages), target, truncated)

    async def history(
        self,
        *,
        with_user: int | None = None,
        group_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """One page of the conversation with a user or in a group (give one of the two): the
        newest ``limit`` (1-100) kept objects with pos below ``before`` (all when None)."""
        if (with_user is None) == (group_id is None):
            raise ValueError("history needs either with_user or group_id")
        fields: dict[str, Any] = {"limit": limit}
        fields |= {"with": with_user} if with_user is not None else {"groupid": group_id}
        if before is not None:
            fields["before"] = before
        reply = await self.request(MsgId.HISTORY, **fields)
        return HistoryPage(_kept_list(reply), reply.get("more") is True)

    async def read(self, pos: int) -> None:
        """Tells the server (and so this user's other devices) everything up to ``pos`` is read."""
        await self.request(MsgId.READ, pos=pos)

    async def ping(self) -> None:
        """Checks that the server answers (a heartbeat)."""
        await self.request(MsgId.PING)

    async def receipt(self, msg_ids: Iterable[int]) -> None:
        """Tells the server these deliveries have reached the user, so it may forget them."""
        await self.request(MsgId.RECEIPT, msg_ids=list(msg_ids))

    async def request(self, msgid: int, **fields: Any) -> dict[str, Any]:
        """Sends one request and returns its reply; raises ChatError if the reply has an errno."""
        seq = next(self._seqs)
        waiter = self._waiters[seq] = _Waiter()
        try:
            with anyio.fail_after(self.request_timeout):
                await self._send({"msgid": int(msgid), **fields, "seq": seq})
                await waiter.done.wait()
        finally:
            del self._waiters[seq]
        if waiter.reply is None:
            raise ConnectionLost("the connection closed before the reply came")
        errno = waiter.reply.get("errno", 0)
        if errno != 0:
            until = _optional_int(waiter.reply.get("until"))
            raise ChatError(errno, str(waiter.reply.get("errmsg", "")), until)
        return waiter.reply

    def events(self) -> AsyncIterator[Event]:
        """The pushes from the server, in order; iteration ends when the connection is lost.

        Read them: once ``event_buffer`` events are waiting, reading from the server pauses,
        and replies wait too.
        """
        return self._event_receiver

    async def next_event(self) -> Event:
        """Waits for the next push, at most ``request_timeout`` seconds."""
        with anyio.fail_after(self.request_timeout):
            try:
                return await self._event_receiver.receive()
            except anyio.EndOfStream:
                raise ConnectionLost("the connection is closed") from None

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._lost:
            raise ConnectionLost("the connection is closed")
        data = orjson.dumps(frame) + b"\n"
        try:
            async with self._send_lock:
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost("the connection is closed") from exc

    async def _read_frames(self) -> None:
        """Routes every frame from the server until the connection ends."""
        frames = BufferedByteReceiveStream(self._stream)
        try:
            while True:
                line = await frames.receive_until(b"\n", self._max_frame)
                await self._route(line)
        except (
            anyio.IncompleteRead,
            anyio.DelimiterNotFound,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            OSError,
        ):
            pass
        finally:
            self._lost = True
            for waiter in self._waiters.values():
                waiter.done.set()
            self._event_sender.close()

    async def _route(self, line: bytes) -> None:
        try:
            frame = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(frame, dict) or type(frame.get("msgid")) is not int:
            return
        if frame["msgid"] in REPLIES:
            seq = frame.get("seq")
            waiter = self._waiters.get(seq) if type(seq) is int else None
            if waiter is not None and waiter.reply is None:
                waiter.reply = frame
                waiter.done.set()
            return
        with suppress(anyio.BrokenResourceError):  # nobody will read events any more
            await self._event_sender.send(parse_event(frame))


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
    max_frame: int = DEFAULT_MAX_FRAME,
    web_port: int | None = None,
    tls: bool | ssl.SSLContext = False,
    server_hostname: str | None = None,
) -> AsyncIterator[ChatClient]:
    """Connects to a chat server for the length of an ``async with`` block; ``web_port`` (the
    server's ``--ws-port``) is where files go up and come down.

    ``tls`` speaks TLS, as a server with ``--tls-cert`` does (on its web port too, which is then
    https): True checks the server's certificate against the system's trust store, an
    ``ssl.SSLContext`` as it says (``ssl.create_default_context(cafile="cert.pem")`` trusts a
    CA or a self-signed certificate). The certificate must be for ``server_hostname`` (default
    ``host``). A failed handshake raises TLSHandshakeError.
    """
    context = _client_context(tls)
    if server_hostname is not None and context is None:
        raise ValueError("server_hostname is for TLS: give tls=True or an ssl.SSLContext")
    with anyio.fail_after(request_timeout):
        stream: ByteStream = await anyio.connect_tcp(host, port)
    if context is not None:
        stream = await _start_tls(stream, f"{host}:{port}", context,
                                  server_hostname or host, request_timeout)
    scheme = "http" if context is None else "https"
    client = ChatClient(
        stream, request_timeout=request_timeout, event_buffer=event_buffer, max_frame=max_frame,
        web_url=None if web_port is None else f"{scheme}://{host}:{web_port}",
        web_tls=context, web_server_hostname=server_hostname,
    )
    error: Exception | None = None
    async with stream, anyio.create_task_group() as task_group:
        task_group.start_soon(client._read_frames)
        try:
            yield client
        except Exception as exc:
            error = exc  # raised below, so that it does not come out wrapped in an ExceptionGroup
        finally:
            task_group.cancel_scope.cancel()
            client._event_receiver.close()
    if error is not None:
        raise error


def _client_context(tls: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is True:
        return ssl.create_default_context()
    if tls is False:
        return None
    raise TypeError(f"tls must be True, False or an ssl.SSLContext, not {tls!r}")


async def _start_tls(
    stream: ByteStream, address: str, context: ssl.SSLContext, server_hostname: str,
    seconds: float,
) -> ByteStream:
    """The TLS stream over a connection, or TLSHandshakeError saying why not (closing it)."""
    try:
        with anyio.fail_after(seconds):
            # Not standard_compatible: frames end with newlines, so a connection closed without
            # TLS's close_notify loses nothing, and closing does not wait for the server's.
            return await TLSStream.wrap(stream, hostname=server_hostname,
                                        ssl_context=context, standard_compatible=False)
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as error:  # SSLError too
        await anyio.aclose_forcefully(stream)
        raise _handshake_error(address, error, seconds) from error


def _handshake_error(address: str, error: Exception, timeout: float) -> TLSHandshakeError:
    if isinstance(error, ssl.SSLCertVerificationError):
        why = error.verify_message or error.reason or str(error)
        return TLSHandshakeError(address, f"the server's certificate is not trusted ({why})",
                                 untrusted=True)
    if isinstance(error, ssl.SSLError):
        why = error.reason or str(error)
    elif isinstance(error, TimeoutError):
        why = f"no answer within {timeout:g} s"
    else:
        why = "it closed the connection"
    return TLSHandshakeError(address, f"the server does not speak TLS on that port ({why})",
                             untrusted=False)
