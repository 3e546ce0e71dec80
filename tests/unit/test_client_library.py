"""The async client library, against a tiny fake server inside the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from chatserver.entrypoints.client.library import (
    ChatError,
    ConnectionLost,
    DirectMessage,
    Friend,
    FriendAnswer,
    FriendRequest,
    Group,
    GroupMember,
    GroupMessage,
    Kicked,
    Presence,
    UnknownFrame,
    connect,
    parse_event,
)

pytestmark = pytest.mark.anyio

Frame = dict[str, Any]
Answer = Callable[["FakeServer", Frame], Awaitable[None]]

CHAT = {"msgid": 6, "id": 2, "name": "bob", "toid": 1, "msg": "hi", "time": "2026-11-26 23:30:00"}
CHAT |= {"ts": 1795735800000, "msg_id": 1001}
GROUP_CHAT = {"msgid": 10, "groupid": 3, "id": 2, "name": "bob", "msg": "hi all"}
GROUP_CHAT |= {"time": "2026-11-26 23:31:00", "ts": 1795735860000, "msg_id": 1002}
FRIEND_ANSWER = {"msgid": 13, "id": 4, "name": "dave", "accept": True, "msg_id": 1003}
LOGIN_REPLY = {
    "msgid": 2,
    "errno": 0,
    "id": 1,
    "name": "alice",
    "friends": [{"id": 2, "name": "bob", "state": "online"}],
    "groups": [
        {
            "id": 3,
            "groupname": "grp",
            "groupdesc": "probe group",
            "users": [
                {"id": 1, "name": "alice", "state": "online", "role": "creator"},
                {"id": 2, "name": "bob", "state": "offline", "role": "normal"},
            ],
        }
    ],
    "offlinemsg": [CHAT, GROUP_CHAT, FRIEND_ANSWER],
    "friend_requests": [{"id": 5, "name": "eve"}],
}


def reply_to(request: Frame, errno: int = 0, **fields: Any) -> Frame:
    """The reply the protocol gives to ``request``, echoing its seq."""
    msgid = {1: 2, 4: 5}.get(request["msgid"], 11)
    reply: Frame = {"msgid": msgid, "errno": errno, **fields}
    if msgid == 11:
        reply["reply_to"] = request["msgid"]
    if "seq" in request:
        reply["seq"] = request["seq"]
    return reply


async def answer_success(server: FakeServer, request: Frame) -> None:
    """Answers like a server to whom every request succeeds."""
    results: dict[int, Frame] = {1: LOGIN_REPLY, 4: {"id": 7}, 6: {"msg_id": 2000}}
    results |= {8: {"groupid": 9}, 10: {"msg_id": 2001}}
    fields = {k: v for k, v in results.get(request["msgid"], {}).items() if k != "msgid"}
    await server.send(reply_to(request, **fields))


class FakeServer:
    """A chat server that records requests and lets ``answer`` reply to them."""

    def __init__(self, answer: Answer = answer_success) -> None:
        self.answer = answer
        self.requests: list[Frame] = []
        self.connection: SocketStream | None = None
        self.port = 0
        self.arrival = anyio.Event()
        self.sending = anyio.Lock()  # replies and a test's pushes share the one connection

    async def serve(self, stream: SocketStream) -> None:
        async with stream:
            await self.answer_all(stream)

    async def answer_all(self, stream: SocketStream) -> None:
        self.connection = stream
        frames = BufferedByteReceiveStream(stream)
        try:
            while True:
                request = orjson.loads(await frames.receive_until(b"\n", 1 << 20))
                self.requests.append(request)
                self.arrival.set()
                self.arrival = anyio.Event()
                await self.answer(self, request)
        except (anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def send(self, *frames: Frame) -> None:
        assert self.connection is not None
        async with self.sending:
            await self.connection.send(b"".join(orjson.dumps(f) + b"\n" for f in frames))

    async def received(self, msgid: int) -> Frame:
        """Waits (briefly) for a request of this msgid and returns the first one."""
        with anyio.fail_after(2):
            while not (found := [r for r in self.requests if r["msgid"] == msgid]):
                await self.arrival.wait()
        return found[0]


@asynccontextmanager
async def running(server: FakeServer) -> AsyncIterator[FakeServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, server.serve)
        yield server
        task_group.cancel_scope.cancel()


async def test_register_sends_name_and_password_and_returns_the_new_id() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        assert await client.register("alice", "s3cret") == 7
    assert server.requests == [{"msgid": 4, "name": "alice", "password": "s3cret", "seq": 1}]


async def test_every_request_carries_a_fresh_seq() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.ping()
        await client.ping()
        await client.send_chat(2, "hi")
    assert [r["seq"] for r in server.requests] == [1, 2, 3]


async def test_replies_are_matched_to_requests_by_seq_whatever_their_order() -> None:
    async def answer_in_reverse(server: FakeServer, request: Frame) -> None:
        if len(server.requests) == 2:
            first, second = server.requests
            await server.send(reply_to(second, msg_id=second["toid"] * 100))
            await server.send(reply_to(first, msg_id=first["toid"] * 100))

    results: dict[int, int] = {}

    async def chat(client: Any, to_id: int) -> None:
        results[to_id] = await client.send_chat(to_id, "hi")

    async with (
        running(FakeServer(answer_in_reverse)) as server,
        connect("127.0.0.1", server.port) as client,
        anyio.create_task_group() as task_group,
    ):
        task_group.start_soon(chat, client, 2)
        await server.received(6)
        task_group.start_soon(chat, client, 3)
    assert results == {2: 200, 3: 300}


async def test_an_error_reply_raises_chat_error_with_errno_and_errmsg() -> None:
    async def no_such_user(server: FakeServer, request: Frame) -> None:
        await server.send(reply_to(request, errno=4, errmsg="no such user"))

    async with (
        running(FakeServer(no_such_user)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        with pytest.raises(ChatError) as raised:
            await client.add_friend(42)
    assert (raised.value.errno, raised.value.errmsg) == (4, "no such user")
    assert server.requests[0] == {"msgid": 7, "friendid": 42, "seq": 1}


async def test_an_error_raised_in_the_block_comes_out_unwrapped() -> None:
    async def failing(server: FakeServer, request: Frame) -> None:
        await server.send(reply_to(request, errno=5, errmsg="no such group"))

    async with running(FakeServer(failing)) as server:
        with pytest.raises(ChatError):
            async with connect("127.0.0.1", server.port) as client:
                await client.join_group(8)


async def test_login_returns_friends_groups_waiting_messages_and_friend_requests() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        login = await client.login(1, "s3cret")
    assert server.requests[0] == {
        "msgid": 1,
        "id": 1,
        "password": "s3cret",
        "receipts": True,
        "seq": 1,
    }
    assert (login.user_id, login.name) == (1, "alice")
    assert login.friends == (Friend(2, "bob", online=True),)
    assert login.groups == (
        Group(
            3,
            "grp",
            "probe group",
            (GroupMember(1, "alice", True, "creator"), GroupMember(2, "bob", False, "normal")),
        ),
    )
    assert login.offline_messages == (
        DirectMessage(1001, 2, "bob", 1, "hi", "2026-11-26 23:30:00", 1795735800000),
        GroupMessage(1002, 3, 2, "bob", "hi all", "2026-11-26 23:31:00", 1795735860000),
        FriendAnswer(1003, 4, "dave", accepted=True),
    )
    assert login.friend_requests == (FriendRequest(5, "eve"),)


async def test_login_by_name_sends_the_name_and_the_receipts_choice() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.login("alice", "pw", receipts=False)
    assert server.requests[0] == {
        "msgid": 1,
        "name": "alice",
        "password": "pw",
        "receipts": False,
        "seq": 1,
    }


async def test_requests_send_the_protocol_fields_and_return_their_results() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        assert await client.send_chat(2, "hi bob") == 2000
        assert await client.send_group_chat(9, "hi all") == 2001
        assert await client.create_group("grp", "a group") == 9
        await client.answer_friend(5, accept=False)
        await client.remove_friend(2)
        await client.leave_group(9)
        await client.receipt([1001, 1002])
        await client.logout()
    sent = [{k: v for k, v in r.items() if k != "seq"} for r in server.requests]
    assert sent == [
        {"msgid": 6, "toid": 2, "msg": "hi bob"},
        {"msgid": 10, "groupid": 9, "msg": "hi all"},
        {"msgid": 8, "groupname": "grp", "groupdesc": "a group"},
        {"msgid": 13, "friendid": 5, "accept": False},
        {"msgid": 18, "friendid": 2},
        {"msgid": 17, "groupid": 9},
        {"msgid": 19, "msg_ids": [1001, 1002]},
        {"msgid": 3},
    ]


async def test_pushes_arrive_in_order_as_typed_events() -> None:
    pushes = [
        CHAT,
        GROUP_CHAT,
        {"msgid": 12, "id": 5, "name": "eve"},
        FRIEND_ANSWER,
        {"msgid": 14, "id": 2, "state": "offline"},
        {"msgid": 15, "errmsg": "logged in elsewhere"},
        {"msgid": 99, "what": "future"},
    ]
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.ping()
        await server.send(*pushes)
        events = [await client.next_event() for _ in pushes]
    assert events == [
        DirectMessage(1001, 2, "bob", 1, "hi", "2026-11-26 23:30:00", 1795735800000),
        GroupMessage(1002, 3, 2, "bob", "hi all", "2026-11-26 23:31:00", 1795735860000),
        FriendRequest(5, "eve"),
        FriendAnswer(1003, 4, "dave", accepted=True),
        Presence(2, online=False),
        Kicked("logged in elsewhere"),
        UnknownFrame({"msgid": 99, "what": "future"}),
    ]


async def test_frames_split_over_reads_or_joined_in_one_read_are_all_handled() -> None:
    data = orjson.dumps(CHAT) + b"\n" + orjson.dumps(GROUP_CHAT) + b"\n" + orjson.dumps(CHAT)
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.ping()
        assert server.connection is not None
        await server.connection.send(data[:-10])
        await anyio.sleep(0.05)
        await server.connection.send(data[-10:] + b"\n")
        events = [await client.next_event() for _ in range(3)]
    assert [type(e) for e in events] == [DirectMessage, GroupMessage, DirectMessage]


async def test_replies_nobody_waits_for_are_dropped_not_taken_for_events() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.ping()
        await server.send({"msgid": 11, "reply_to": 0, "errno": 7, "errmsg": "bad json"})
        await server.send({"msgid": 11, "seq": 999, "reply_to": 16, "errno": 0}, CHAT)
        assert isinstance(await client.next_event(), DirectMessage)


async def test_the_library_does_not_receipt_by_itself() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        login = await client.login("alice", "pw")
        await server.send(CHAT)
        await client.next_event()
        await client.ping()  # a round trip, so that anything the client sent has arrived
    assert login.offline_messages
    assert [r["msgid"] for r in server.requests] == [1, 16]


async def test_a_request_without_a_reply_times_out() -> None:
    async def silent(server: FakeServer, request: Frame) -> None:
        pass

    async with (
        running(FakeServer(silent)) as server,
        connect("127.0.0.1", server.port, request_timeout=0.2) as client,
    ):
        with anyio.fail_after(2), pytest.raises(TimeoutError):
            await client.ping()


async def test_a_lost_connection_fails_waiting_requests_and_ends_the_events() -> None:
    async def hang_up(server: FakeServer, request: Frame) -> None:
        assert server.connection is not None
        await server.connection.aclose()

    async with (
        running(FakeServer(hang_up)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        with pytest.raises(ConnectionLost):
            await client.ping()
        with anyio.fail_after(2):
            assert [event async for event in client.events()] == []
        assert not client.connected
        with pytest.raises(ConnectionLost):
            await client.ping()


async def test_connecting_to_a_closed_port_raises_os_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(OSError):
        async with connect("127.0.0.1", port):
            pass


def test_a_malformed_push_is_kept_as_an_unknown_frame() -> None:
    frame = {"msgid": 6, "id": 2}
    assert parse_event(frame) == UnknownFrame(frame)
