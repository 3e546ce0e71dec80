"""The async client library: the wire against a tiny fake server inside the test, and version 2
(devices, the inbox) against a real node served over TCP in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import orjson
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.server import TcpServer
from chatserver.application.node import Limits
from chatserver.entrypoints.bootstrap import Config, bootstrap
from chatserver.entrypoints.client.library import (
    ChatClient,
    ChatError,
    ConnectionLost,
    DirectMessage,
    Event,
    Friend,
    FriendAnswer,
    FriendRemoved,
    FriendRequest,
    Group,
    GroupEvent,
    GroupMember,
    GroupMessage,
    Kicked,
    Presence,
    Read,
    TLSHandshakeError,
    UnknownFrame,
    connect,
    parse_event,
    pos_of,
)
from tests.unit.conftest import FAST_HASHER

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
        "device": "default",
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
        "device": "default",
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


@pytest.mark.parametrize(
    ("answer", "why"),
    [(b'{"msgid":11,"errno":1}\n', "(WRONG_VERSION_NUMBER)"),  # a plain server's reply
     (b"", "(it closed the connection)")],
)
async def test_tls_to_a_port_that_does_not_speak_it_is_a_tls_handshake_error(
    answer: bytes, why: str,
) -> None:
    async def plain(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()  # the ClientHello
            if answer:
                await stream.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, plain)
        with pytest.raises(TLSHandshakeError) as caught:
            async with connect("127.0.0.1", port, tls=True):
                raise AssertionError("connected")
        task_group.cancel_scope.cancel()
    assert not caught.value.untrusted and isinstance(caught.value, ConnectionError)
    assert str(caught.value) == (f"TLS handshake with 127.0.0.1:{port} failed: the server "
                                 f"does not speak TLS on that port {why}")


async def test_tls_takes_true_false_or_a_context_and_server_hostname_only_with_tls() -> None:
    with pytest.raises(TypeError, match=r"tls must be True, False or an ssl\.SSLContext"):
        async with connect("127.0.0.1", 1, tls="yes"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="server_hostname is for TLS"):
        async with connect("127.0.0.1", 1, server_hostname="chat.example.com"):
            pass


def test_a_malformed_push_is_kept_as_an_unknown_frame() -> None:
    frame = {"msgid": 6, "id": 2}
    assert parse_event(frame) == UnknownFrame(frame)


# --- version 2: devices and the inbox ------------------------------------------------------


async def test_login_sends_the_device_and_since_and_returns_last_pos_and_read_pos() -> None:
    async def inbox_login(server: FakeServer, request: Frame) -> None:
        fields = {k: v for k, v in LOGIN_REPLY.items() if k != "msgid"}
        await server.send(reply_to(request, **fields, last_pos=42, read_pos=40))

    async with (
        running(FakeServer(inbox_login)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        login = await client.login(1, "pw", device="phone", since=37)
    assert server.requests[0] | {"seq": 0} == {
        "msgid": 1,
        "id": 1,
        "password": "pw",
        "receipts": True,
        "device": "phone",
        "since": 37,
        "seq": 0,
    }
    assert (login.last_pos, login.read_pos) == (42, 40)


async def test_a_server_without_an_inbox_leaves_the_positions_none() -> None:
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        login = await client.login(1, "pw")
        sent = await client.send_chat(2, "hi")
    assert (login.last_pos, login.read_pos) == (None, None)
    assert all(m.pos is None for m in login.offline_messages)
    assert sent == 2000 and sent.pos is None


async def test_positions_come_with_pushes_and_unknown_pushes_stay_out_of_the_way() -> None:
    pushes = [
        CHAT | {"pos": 7},
        GROUP_CHAT | {"pos": 8},
        FRIEND_ANSWER | {"pos": 9},
        {"msgid": 22, "pos": 9},
        {"msgid": 29, "groupid": 3, "event": "joined", "msg_id": 1004, "pos": 10},
    ]
    async with running(FakeServer()) as server, connect("127.0.0.1", server.port) as client:
        await client.ping()
        await server.send(*pushes)
        events = [await client.next_event() for _ in pushes]
    assert events[:4] == [
        DirectMessage(1001, 2, "bob", 1, "hi", "2026-11-26 23:30:00", 1795735800000, pos=7),
        GroupMessage(1002, 3, 2, "bob", "hi all", "2026-11-26 23:31:00", 1795735860000, pos=8),
        FriendAnswer(1003, 4, "dave", accepted=True, pos=9),
        Read(9),
    ]
    assert isinstance(events[4], UnknownFrame)
    assert [pos_of(event) for event in events] == [7, 8, 9, None, 10]


async def test_a_send_returns_the_msg_id_as_an_int_that_also_carries_the_pos() -> None:
    async def with_pos(server: FakeServer, request: Frame) -> None:
        await server.send(reply_to(request, msg_id=2000 + request["seq"], pos=50 + request["seq"]))

    async with (
        running(FakeServer(with_pos)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        direct = await client.send_chat(2, "hi")
        group = await client.send_group_chat(3, "hi all")
    assert isinstance(direct, int) and direct == 2001 and {direct: "x"}[2001] == "x"
    assert f"{direct}" == "2001" and direct + 1 == 2002
    assert (direct.msg_id, direct.pos) == (2001, 51)
    assert (group.msg_id, group.pos) == (2002, 52)
    assert repr(group) == "Sent(msg_id=2002, pos=52)"


async def test_sync_history_and_read_send_the_protocol_fields() -> None:
    kept = [CHAT | {"pos": 5}, GROUP_CHAT | {"pos": 6}]

    async def inbox(server: FakeServer, request: Frame) -> None:
        results = {20: {"msgs": kept, "last_pos": 6, "truncated": True}}
        results[21] = {"msgs": kept, "more": True}
        await server.send(reply_to(request, **results.get(request["msgid"], {})))

    async with (
        running(FakeServer(inbox)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        synced = await client.sync(4, limit=10)
        page = await client.history(with_user=2, before=9, limit=2)
        await client.history(group_id=3)
        await client.read(6)
        with pytest.raises(ValueError):
            await client.history()
        with pytest.raises(ValueError):
            await client.history(with_user=2, group_id=3)
    sent = [{k: v for k, v in r.items() if k != "seq"} for r in server.requests]
    assert sent == [
        {"msgid": 20, "since": 4, "limit": 10},
        {"msgid": 21, "with": 2, "before": 9, "limit": 2},
        {"msgid": 21, "groupid": 3, "limit": 50},
        {"msgid": 22, "pos": 6},
    ]
    assert [pos_of(m) for m in synced.messages] == [5, 6]
    assert (synced.last_pos, synced.truncated) == (6, True)
    assert isinstance(page.messages[0], DirectMessage) and page.more and page.first_pos == 5


async def test_sync_all_stops_when_a_server_answers_the_same_page_again() -> None:
    async def stuck(server: FakeServer, request: Frame) -> None:
        await server.send(reply_to(request, msgs=[CHAT | {"pos": 5}], last_pos=99))

    async with (
        running(FakeServer(stuck)) as server,
        connect("127.0.0.1", server.port) as client,
    ):
        synced = await client.sync_all(4)
    assert [r["since"] for r in server.requests] == [4, 5]
    assert synced.last_pos == 99


# --- version 2 against a real node (in-process, over TCP) ----------------------------------


@asynccontextmanager
async def node_on_tcp(limits: Limits | None = None) -> AsyncIterator[int]:
    """A node on in-memory adapters served over TCP on a free port; yields the port."""
    config = Config(database="memory://", node_id="test", limits=limits or Limits())
    async with bootstrap(config, hasher=FAST_HASHER) as app:
        server = TcpServer(app.node, "127.0.0.1", 0, TransportLimits())
        async with anyio.create_task_group() as task_group:
            port = await task_group.start(server.serve)
            yield port
            await server.shutdown()
            task_group.cancel_scope.cancel()


async def test_two_devices_of_one_user_both_get_a_message_and_each_others_sends() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as pc,
        connect("127.0.0.1", port) as phone,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await pc.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await pc.login(alice_id, "pw", device="pc")
        await phone.login("alice", "pw", device="phone")
        await bob.login(bob_id, "pw")

        sent = await bob.send_chat(alice_id, "hi alice")
        on_pc, on_phone = await pc.next_event(), await phone.next_event()
        mine = await pc.send_chat(bob_id, "hi bob")
        carbon = await phone.next_event()
        reply = await bob.next_event()
    assert isinstance(on_pc, DirectMessage) and on_pc == on_phone
    assert (on_pc.msg_id, on_pc.sender_id, on_pc.text) == (sent, bob_id, "hi alice")
    assert isinstance(carbon, DirectMessage)
    assert (carbon.msg_id, carbon.sender_id, carbon.recipient_id) == (mine, alice_id, bob_id)
    assert on_pc.pos is not None and carbon.pos == mine.pos == on_pc.pos + 1
    assert isinstance(reply, DirectMessage) and reply.msg_id == mine and reply.pos == sent.pos + 1


async def test_sync_all_pages_through_the_inbox_in_pos_order_without_a_gap() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await alice.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await bob.login(bob_id, "pw")
        await alice.login(alice_id, "pw")
        sent = [await bob.send_chat(alice_id, f"message {n}") for n in range(12)]
        login = await alice.login(alice_id, "pw", device="laptop")
        synced = await alice.sync_all(0, limit=5)
        tail = await alice.sync(login.last_pos or 0)
    assert login.last_pos == 12
    assert [pos_of(m) for m in synced.messages] == list(range(1, 13))
    assert [m.msg_id for m in synced.messages if isinstance(m, DirectMessage)] == sent
    assert (synced.last_pos, synced.truncated) == (12, False)
    assert tail.messages == () and tail.last_pos == 12


async def test_login_since_gives_only_what_follows_it() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await alice.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await bob.login(bob_id, "pw")
        for n in range(5):
            await bob.send_chat(alice_id, f"message {n}")
        login = await alice.login(alice_id, "pw", device="tablet", since=3)
    assert [(pos_of(m), getattr(m, "text", None)) for m in login.offline_messages] == [
        (4, "message 3"),
        (5, "message 4"),
    ]


async def test_history_pages_back_through_a_conversation_and_a_group() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await alice.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await alice.login(alice_id, "pw")
        await bob.login(bob_id, "pw")
        group_id = await alice.create_group("team")
        await bob.join_group(group_id)
        for n in range(3):
            await alice.send_chat(bob_id, f"a{n}")
            await bob.send_chat(alice_id, f"b{n}")
        await bob.send_group_chat(group_id, "to the team")

        newest = await alice.history(with_user=bob_id, limit=4)
        older = await alice.history(with_user=bob_id, before=newest.first_pos, limit=4)
        group = await alice.history(group_id=group_id)
        with pytest.raises(ChatError) as not_a_user:
            await alice.history(with_user=999_999)
    texts = [getattr(m, "text", None) for m in (*older.messages, *newest.messages)]
    assert texts == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert (newest.more, older.more) == (True, False)
    # a group's history holds its events too (Version 2): bob's joining, then his message
    assert [(type(m).__name__, getattr(m, "event", None) or m.text) for m in group.messages] == [
        ("GroupEvent", "joined"),
        ("GroupMessage", "to the team"),
    ]
    assert isinstance(group.messages[-1], GroupMessage) and group.more is False
    assert not_a_user.value.errno == 4


async def test_read_reaches_the_other_devices_and_comes_back_at_login() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as pc,
        connect("127.0.0.1", port) as phone,
    ):
        alice_id = await pc.register("alice", "pw")
        await pc.login(alice_id, "pw", device="pc")
        await phone.login(alice_id, "pw", device="phone")
        await pc.send_chat(alice_id, "a note to self")
        assert isinstance(await phone.next_event(), DirectMessage)
        await pc.read(1)
        told = await phone.next_event()
        await pc.read(0)  # lower: changes nothing, tells nobody
        login = await pc.login(alice_id, "pw", device="pc")
    assert told == Read(1)
    assert (login.read_pos, login.last_pos) == (1, 1)


async def test_group_chats_and_friend_answers_carry_their_pos_on_every_device() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as pc,
        connect("127.0.0.1", port) as phone,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await pc.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await pc.login(alice_id, "pw", device="pc")
        await phone.login(alice_id, "pw", device="phone")
        await bob.login(bob_id, "pw")
        await pc.add_friend(bob_id)
        assert isinstance(await bob.next_event(), FriendRequest)
        await bob.answer_friend(alice_id, accept=True)
        answers = [await next_message(pc), await next_message(phone)]
        group_id = await bob.create_group("team")
        await pc.join_group(group_id)
        sent = await pc.send_group_chat(group_id, "hello team")
        carbon = await next_message(phone)
        to_bob = await next_message(bob)
    assert isinstance(answers[0], FriendAnswer) and answers[0] == answers[1]
    assert answers[0] == FriendAnswer(answers[0].msg_id, bob_id, "bob", True, answers[0].pos)
    assert isinstance(carbon, GroupMessage) and carbon.sender_id == alice_id
    assert (carbon.msg_id, carbon.pos) == (sent.msg_id, sent.pos)
    # alice's inbox: the answer, then her joining the group (a GROUP_EVENT), then her message
    assert answers[0].pos is not None and sent.pos == answers[0].pos + 2
    assert isinstance(to_bob, GroupMessage) and to_bob.msg_id == sent and to_bob.pos is not None


async def next_message(client: ChatClient) -> Event:
    """The next chat, group chat or friend answer, past notices and events of newer servers."""
    while not isinstance(event := await client.next_event(), DirectMessage | GroupMessage):
        if isinstance(event, FriendAnswer):
            return event
    return event


def test_friend_removed_is_parsed_as_an_event() -> None:
    assert parse_event({"msgid": 31, "id": 5}) == FriendRemoved(5)


# --- group administration, blocking and the account (Version 2) against a real node --------


E = TypeVar("E")


async def next_of(client: ChatClient, kind: type[E]) -> E:
    """The next event of ``kind``, past any others (presence, events of other groups)."""
    while not isinstance(event := await client.next_event(), kind):
        pass
    return event


async def test_group_admin_requests_reach_every_member_as_group_events() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as bob,
        connect("127.0.0.1", port) as carol,
    ):
        alice_id, bob_id, carol_id = [
            await c.register(name, "pw")
            for c, name in ((alice, "alice"), (bob, "bob"), (carol, "carol"))
        ]
        for client, user in ((alice, alice_id), (bob, bob_id), (carol, carol_id)):
            await client.login(user, "pw")
        group_id = await alice.create_group("team")
        await bob.join_group(group_id)
        await carol.join_group(group_id)

        await alice.set_role(group_id, bob_id, "admin")
        made_admin = await next_of(carol, GroupEvent)
        while made_admin.event != "role":
            made_admin = await next_of(carol, GroupEvent)
        with pytest.raises(ChatError) as admin_on_creator:
            await bob.kick(group_id, alice_id)
        await bob.kick(group_id, carol_id)
        kicked = await next_of(carol, GroupEvent)
        with pytest.raises(ChatError) as kicked_sends:
            await carol.send_group_chat(group_id, "still here?")

        await alice.mute(group_id, bob_id, 4_000_000_000_000)
        with pytest.raises(ChatError) as muted:
            await bob.send_group_chat(group_id, "hello?")
        await alice.unmute(group_id, bob_id)
        await bob.send_group_chat(group_id, "thanks")

        await bob.update_group(group_id, name="team2", description="renamed by an admin")
        await alice.transfer_group(group_id, bob_id)
        with pytest.raises(ChatError) as no_longer_creator:
            await alice.dissolve_group(group_id)
        await bob.dissolve_group(group_id)
        events = []
        while not events or events[-1].event != "dissolved":
            events.append(await next_of(alice, GroupEvent))
        with pytest.raises(ValueError):
            await bob.update_group(group_id)
    assert (made_admin.user_id, made_admin.by, made_admin.role) == (bob_id, alice_id, "admin")
    assert admin_on_creator.value.errno == 12
    assert (kicked.event, kicked.user_id, kicked.by, kicked.group_id) == (
        "kicked",
        carol_id,
        bob_id,
        group_id,
    )
    assert kicked_sends.value.errno in (5, 6)
    assert muted.value.errno == 13 and muted.value.until == 4_000_000_000_000
    seen = [(e.event, e.user_id) for e in events]
    assert seen[-4:] == [
        ("muted", bob_id),
        ("updated", bob_id),
        ("transfer", bob_id),
        ("dissolved", bob_id),
    ]
    updated = events[-3]
    assert (updated.group_name, updated.group_description) == ("team2", "renamed by an admin")
    assert no_longer_creator.value.errno == 12


async def test_block_unblock_and_a_new_password_through_the_library() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as phone,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await alice.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await alice.login(alice_id, "pw", device="pc")
        await phone.login(alice_id, "pw", device="phone")
        await bob.login(bob_id, "pw")
        await alice.add_friend(bob_id)
        await next_of(bob, FriendRequest)
        await bob.answer_friend(alice_id, accept=True)

        await alice.block(bob_id)
        removed = await next_of(bob, FriendRemoved)
        with pytest.raises(ChatError) as blocked_chat:
            await bob.send_chat(alice_id, "let me in")
        relogin = await phone.login(alice_id, "pw", device="phone")
        await alice.unblock(bob_id)
        await bob.send_chat(alice_id, "hello again")

        await alice.change_password("pw", "new-pw")
        kicked = await next_of(phone, Kicked)
        with pytest.raises(ChatError) as old_password:
            await phone.login(alice_id, "pw", device="phone")
        with pytest.raises(ChatError) as wrong_current:
            await alice.change_password("pw", "other")
        again = await phone.login(alice_id, "new-pw", device="phone")
    assert removed == FriendRemoved(alice_id)
    assert blocked_chat.value.errno == 12
    assert relogin.blocked == (bob_id,) and relogin.friends == ()
    assert isinstance(kicked, Kicked)
    assert old_password.value.errno == 1 and wrong_current.value.errno == 1
    assert again.user_id == alice_id and again.blocked == ()


async def test_delete_account_frees_the_name_and_tells_friends() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as alice,
        connect("127.0.0.1", port) as bob,
    ):
        alice_id = await alice.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await alice.login(alice_id, "pw")
        await bob.login(bob_id, "pw")
        await alice.add_friend(bob_id)
        await next_of(bob, FriendRequest)
        await bob.answer_friend(alice_id, accept=True)
        with pytest.raises(ChatError) as wrong:
            await alice.delete_account("not it")
        await alice.delete_account("pw")
        told = await next_of(bob, FriendRemoved)
        with pytest.raises(ChatError) as logged_out:
            await alice.send_chat(bob_id, "hi")
        new_id = await bob.register("alice", "pw2")
    assert wrong.value.errno == 1
    assert told == FriendRemoved(alice_id)
    assert logged_out.value.errno == 3
    assert new_id != alice_id
