"""The terminal client: commands, what it shows, receipts, against a tiny fake server."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from chatserver.application.node import Limits
from chatserver.entrypoints.client.library import (
    ChatClient,
    ChatError,
    DirectMessage,
    GroupEvent,
    connect,
)
from chatserver.entrypoints.client.terminal import (
    COMMANDS,
    MENU,
    BadInput,
    Terminal,
    backoff_delays,
    parse_command,
)
from tests.unit.test_client_library import node_on_tcp

pytestmark = pytest.mark.anyio

Frame = dict[str, Any]

CHAT = {"msgid": 6, "id": 2, "name": "bob", "toid": 1, "msg": "hi alice"}
CHAT |= {"time": "2026-11-26 23:30:00", "ts": 1795735800000, "msg_id": 1001}
GROUP_CHAT = {"msgid": 10, "groupid": 3, "id": 2, "name": "bob", "msg": "hi all"}
GROUP_CHAT |= {"time": "2026-11-26 23:31:00", "ts": 1795735860000, "msg_id": 1002}
LOGIN_REPLY = {
    "id": 1,
    "name": "alice",
    "friends": [{"id": 2, "name": "bob", "state": "online"}],
    "groups": [
        {
            "id": 3,
            "groupname": "grp",
            "groupdesc": "probe group",
            "users": [{"id": 1, "name": "alice", "state": "online", "role": "creator"}],
        }
    ],
    "offlinemsg": [{**CHAT, "msg": "while you were away", "msg_id": 900}],
    "friend_requests": [{"id": 5, "name": "eve"}],
}


def reply_to(request: Frame, errno: int = 0, **fields: Any) -> Frame:
    msgid = {1: 2, 4: 5}.get(request["msgid"], 11)
    reply: Frame = {"msgid": msgid, "errno": errno, "seq": request["seq"], **fields}
    if msgid == 11:
        reply["reply_to"] = request["msgid"]
    return reply


class FakeServer:
    """A chat server that records requests and answers each with ``results`` or success.

    A result of None hangs up instead of answering; requests whose msgid is in ``ignored``
    get no answer at all.
    """

    def __init__(self, **results: Callable[[Frame], Frame | None]) -> None:
        self.results = results
        self.ignored: set[int] = set()
        self.requests: list[Frame] = []
        self.connections = 0
        self.connection: SocketStream | None = None
        self.port = 0
        self.arrival = anyio.Event()
        self.listening = anyio.CancelScope()
        self.stopped = anyio.Event()
        self.sending = anyio.Lock()  # replies and a test's pushes share the one connection

    def answer(self, request: Frame) -> Frame | None:
        custom = self.results.get(f"msgid_{request['msgid']}")
        if custom is not None:
            return custom(request)
        fields: dict[int, Frame] = {1: LOGIN_REPLY, 4: {"id": 7}, 6: {"msg_id": 2000}}
        fields[8] = {"groupid": 9}
        return reply_to(request, **fields.get(request["msgid"], {}))

    async def serve(self, stream: SocketStream) -> None:
        async with stream:
            await self.answer_all(stream)

    async def answer_all(self, stream: SocketStream) -> None:
        self.connection = stream
        self.connections += 1
        frames = BufferedByteReceiveStream(stream)
        try:
            while True:
                request = orjson.loads(await frames.receive_until(b"\n", 1 << 20))
                self.requests.append(request)
                self.arrival.set()
                self.arrival = anyio.Event()
                if request["msgid"] in self.ignored:
                    continue
                reply = self.answer(request)
                if reply is None:
                    await stream.aclose()
                    return
                await self.send(reply)
        except (anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def send(self, *frames: Frame) -> None:
        assert self.connection is not None
        async with self.sending:
            await self.connection.send(b"".join(orjson.dumps(f) + b"\n" for f in frames))

    async def received(self, msgid: int, count: int = 1) -> list[Frame]:
        """Waits (briefly) until ``count`` requests of this msgid have come, and returns them."""
        with anyio.fail_after(3):
            while len(found := [r for r in self.requests if r["msgid"] == msgid]) < count:
                await self.arrival.wait()
        return found

    async def hang_up(self) -> None:
        assert self.connection is not None
        await self.connection.aclose()

    async def go_down(self) -> None:
        """Stops listening and closes the connections, as a server process that stops."""
        self.listening.cancel()
        await self.stopped.wait()


@asynccontextmanager
async def running(server: FakeServer, port: int = 0) -> AsyncIterator[FakeServer]:
    """Serves on ``port`` (a free one if 0) for the length of the block, or until go_down."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.listening, server.stopped = anyio.CancelScope(), anyio.Event()

    async def serve() -> None:
        with server.listening:
            await listener.serve(server.serve)
        await listener.aclose()
        server.stopped.set()

    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(serve)
        yield server
        task_group.cancel_scope.cancel()


class FakeConsole:
    """A console that the test types into; it keeps every line the terminal shows."""

    def __init__(self) -> None:
        self.typed, self.lines = anyio.create_memory_object_stream[str](100)
        self.shown: list[str] = []
        self.prompts: list[tuple[str, bool]] = []
        self.changed = anyio.Event()

    async def read_line(self, prompt: str, *, secret: bool = False) -> str | None:
        self.prompts.append((prompt, secret))
        try:
            return await self.lines.receive()
        except anyio.EndOfStream:
            return None

    def show(self, text: str) -> None:
        self.shown.extend(text.splitlines())
        self.changed.set()
        self.changed = anyio.Event()

    def type(self, *lines: str) -> None:
        for line in lines:
            self.typed.send_nowait(line)

    async def counts(self, lines: int) -> None:
        """Waits (briefly) until ``lines`` lines have been shown."""
        with anyio.fail_after(3):
            while len(self.shown) < lines:
                await self.changed.wait()

    async def shows(self, fragment: str) -> str:
        """Waits (briefly) for a shown line containing ``fragment`` and returns it."""
        with anyio.fail_after(3):
            while not (found := [line for line in self.shown if fragment in line]):
                await self.changed.wait()
        return found[0]


@asynccontextmanager
async def terminal(
    server: FakeServer,
    *,
    heartbeat_interval: float = 60.0,
    request_timeout: float = 10.0,
    device: str = "default",
    web_port: int | None = None,
) -> AsyncIterator[tuple[FakeConsole, anyio.Event]]:
    """Runs a Terminal against ``server``; the event it yields is set when the terminal ends.

    It reconnects after 0.05 s, doubling up to 0.2 s.
    """
    console = FakeConsole()
    done = anyio.Event()

    async def run() -> None:
        shell = Terminal(
            "127.0.0.1",
            server.port,
            console,
            heartbeat_interval=heartbeat_interval,
            backoff_first=0.05,
            backoff_max=0.2,
            request_timeout=request_timeout,
            device=device,
            web_port=web_port,
        )
        await shell.run()
        done.set()

    with anyio.fail_after(8):
        async with running(server), anyio.create_task_group() as task_group:
            task_group.start_soon(run)
            yield console, done
            task_group.cancel_scope.cancel()
    for stream in (console.typed, console.lines):
        stream.close()


async def finished(done: anyio.Event) -> None:
    with anyio.fail_after(3):
        await done.wait()


def test_a_command_line_splits_into_its_arguments() -> None:
    assert parse_command("chat:2:hi: how are you?") == (COMMANDS["chat"], [2, "hi: how are you?"])
    assert parse_command("groupchat:3:hello") == (COMMANDS["groupchat"], [3, "hello"])
    assert parse_command("creategroup:grp") == (COMMANDS["creategroup"], ["grp", ""])
    assert parse_command("creategroup:grp:a group") == (COMMANDS["creategroup"], ["grp", "a group"])
    assert parse_command(" addfriend:5 ") == (COMMANDS["addfriend"], [5])
    assert parse_command("loginout") == (COMMANDS["loginout"], [])


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("hello", "invalid input command! type help to see the commands"),
        ("chat:bob:hi", "usage: chat:ID:MESSAGE (ID is a number)"),
        ("chat:2", "usage: chat:ID:MESSAGE"),
        ("chat:2:", "usage: chat:ID:MESSAGE (MESSAGE must not be empty)"),
        ("addfriend", "usage: addfriend:ID"),
        ("creategroup", "usage: creategroup:NAME[:DESC]"),
        ("loginout:now", "usage: loginout"),
    ],
)
def test_bad_command_lines_get_a_one_line_hint(line: str, hint: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_command(line)
    assert str(raised.value) == hint


async def test_login_shows_user_friends_groups_requests_and_waiting_messages() -> None:
    async with terminal(FakeServer()) as (console, done):
        console.type("1", "alice", "s3cret")
        await console.shows("messages while you were away")
        console.type("quit")
        await finished(done)
    for line in [
        "current login user >> id: 1 name: alice",
        "  [2] bob online",
        "  [3] grp: probe group",
        "      [1] alice online creator",
        "  [5] eve: accept:5 or decline:5",
        "  2026-11-26 23:30:00 [2] bob said: while you were away",
    ]:
        assert line in console.shown
    assert ("password: ", True) in console.prompts


async def test_login_uses_receipts_and_receipts_the_waiting_messages() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "1", "s3cret")
        receipts = await server.received(19)
    login = server.requests[0]
    assert (login["id"], login["password"], login["receipts"]) == (1, "s3cret", True)
    assert receipts[0]["msg_ids"] == [900]


async def test_pushes_are_shown_as_they_arrive_and_deliveries_are_receipted() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send(
            CHAT,
            GROUP_CHAT,
            {"msgid": 12, "id": 6, "name": "frank"},
            {"msgid": 13, "id": 4, "name": "dave", "accept": True, "msg_id": 1003},
            {"msgid": 14, "id": 2, "state": "offline"},
            CHAT,  # a redelivery: shown once, receipted again
        )
        receipts = await server.received(19, count=2)
        await console.shows("is offline")
    assert [line for line in console.shown if "said" in line][-2:] == [
        "2026-11-26 23:30:00 [2] bob said: hi alice",
        "group[3] 2026-11-26 23:31:00 [2] bob said: hi all",
    ]
    assert "[6] frank asks to be your friend: accept:6 or decline:6" in console.shown
    assert "[4] dave accepted your friend request" in console.shown
    assert "friend [2] bob is offline" in console.shown
    assert sorted(receipts[1]["msg_ids"]) == [1001, 1001, 1002, 1003]


async def test_group_events_are_shown_and_receipted() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send(
            {
                "msgid": 29,
                "groupid": 3,
                "event": "muted",
                "userid": 2,
                "by": 1,
                "until": 1796420976810,
                "msg_id": 1004,
                "pos": 9,
                "time": "2026-11-26 23:32:00",
                "ts": 1796420976000,
            },
        )
        receipts = await server.received(19, count=2)
        await console.shows("muted")
    assert "group[3] muted: [2] by [1] (until 1796420976810)" in console.shown
    assert receipts[1]["msg_ids"] == [1004]


async def test_bad_input_prints_a_hint_and_the_next_command_still_works() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw", "chat:bob:hi", "nonsense", "chat:2:hi bob")
        chats = await server.received(6)
    assert chats[0]["toid"] == 2 and chats[0]["msg"] == "hi bob"
    assert "usage: chat:ID:MESSAGE (ID is a number)" in console.shown
    assert "invalid input command! type help to see the commands" in console.shown


async def test_a_server_error_prints_its_errmsg_in_one_line() -> None:
    def no_such_user(request: Frame) -> Frame:
        return reply_to(request, errno=4, errmsg="no such user")

    server = FakeServer(msgid_7=no_such_user)
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "addfriend:42")
        assert await console.shows("addfriend:") == "addfriend: no such user"
        console.type("quit")
        await finished(done)


async def test_a_failed_login_prints_the_reason_and_shows_the_menu_again() -> None:
    def invalid(request: Frame) -> Frame:
        return reply_to(request, errno=1, errmsg="id or password is invalid!")

    async with terminal(FakeServer(msgid_1=invalid)) as (console, done):
        console.type("1", "alice", "wrong")
        assert await console.shows("login failed") == "login failed: id or password is invalid!"
        console.type("3")
        await finished(done)


async def test_register_shows_the_new_user_id_and_the_menu_again() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("2", "carol", "pw")
        assert await console.shows("registered") == "registered: your user id is 7"
        await console.shows("3. quit")
        await anyio.sleep(0.05)
    assert server.requests[0] | {"seq": 0} == {
        "msgid": 4,
        "name": "carol",
        "password": "pw",
        "seq": 0,
    }
    registered = console.shown.index("registered: your user id is 7")
    assert console.shown[registered + 1 :] == MENU.splitlines()


async def test_commands_send_their_requests() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        console.type("addfriend:2", "accept:5", "decline:6", "removefriend:2")
        console.type("creategroup:grp:a group", "addgroup:4", "leavegroup:4", "groupchat:9:hi")
        await server.received(10)
    sent = [{k: v for k, v in r.items() if k != "seq"} for r in server.requests]
    for request in [
        {"msgid": 7, "friendid": 2},
        {"msgid": 13, "friendid": 5, "accept": True},
        {"msgid": 13, "friendid": 6, "accept": False},
        {"msgid": 18, "friendid": 2},
        {"msgid": 8, "groupname": "grp", "groupdesc": "a group"},
        {"msgid": 9, "groupid": 4},
        {"msgid": 17, "groupid": 4},
        {"msgid": 10, "groupid": 9, "msg": "hi"},
    ]:
        assert request in sent


async def session_lines(
    *commands: str, pushes: tuple[Frame, ...] = (), expect: int | None = None
) -> list[str]:
    """What the terminal shows for ``commands`` typed after logging in as alice (LOGIN_REPLY:
    friend [2] bob, group [3] grp, a request from [5] eve), after the server pushed ``pushes``
    (which show ``expect`` lines, one each unless told; with no commands, those lines)."""
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        await server.received(19)
        start = len(console.shown)
        if pushes:
            await server.send(*pushes)
            await console.counts(start + (len(pushes) if expect is None else expect))
        if commands:  # what the commands say; else what the pushes showed
            start = len(console.shown)
        for command in commands:
            shown = len(console.shown)
            console.type(command)
            await console.counts(shown + 1)  # each command here says one line
        console.type("quit")
        await finished(done)
    return console.shown[start:]


async def test_addfriend_says_a_friend_is_already_your_friend() -> None:
    assert await session_lines("addfriend:2", "addfriend:42") == [
        "[2] bob is already your friend",
        "friend request sent to [42]",
    ]


async def test_addfriend_to_someone_who_asked_first_makes_them_your_friend_by_name() -> None:
    assert await session_lines("addfriend:5", "addfriend:5") == [
        "[5] eve is now your friend",
        "[5] eve is already your friend",
    ]


async def test_accepting_names_the_new_friend_who_then_is_a_friend() -> None:
    frank = {"msgid": 12, "id": 6, "name": "frank"}
    lines = await session_lines("accept:5", "accept:6", "addfriend:6", pushes=(frank,))
    assert lines == [
        "[5] eve is now your friend",
        "[6] frank is now your friend",
        "[6] frank is already your friend",
    ]


async def test_whoever_accepted_or_came_online_counts_as_a_friend() -> None:
    dave = {"msgid": 13, "id": 4, "name": "dave", "accept": True, "msg_id": 1003}
    came_online = {"msgid": 14, "id": 11, "state": "online"}
    lines = await session_lines("addfriend:4", "addfriend:11", pushes=(dave, came_online))
    assert lines == ["[4] dave is already your friend", "[11] is already your friend"]


async def test_declining_and_removing_name_the_user_and_say_what_changed() -> None:
    lines = await session_lines("decline:5", "removefriend:2", "removefriend:2", "addfriend:2")
    assert lines == [
        "declined the friend request of [5] eve",
        "[2] bob is no longer your friend",
        "[2] was not your friend",
        "friend request sent to [2]",
    ]


async def test_addgroup_twice_says_you_are_already_in_the_group() -> None:
    lines = await session_lines(
        "addgroup:3",
        "addgroup:4",
        "addgroup:4",
        "creategroup:team",
        "addgroup:9",
        "leavegroup:3",
        "addgroup:3",
    )
    assert lines == [
        "you are already in group [3] grp",
        "joined group [4]",
        "you are already in group [4]",
        "created group [9] team",
        "you are already in group [9] team",
        "left group [3] grp",
        "joined group [3]",
    ]


async def test_help_lists_every_command() -> None:
    async with terminal(FakeServer()) as (console, _):
        console.type("1", "alice", "pw", "help")
        await console.shows("log out and leave")
    usages = ["chat:ID:MESSAGE", "creategroup:NAME[:DESC]", "groupchat:GID:MESSAGE", "quit"]
    usages += ["kick:GID:ID", "mute:GID:ID[:MINUTES]", "role:GID:ID:ROLE", "dissolve:GID"]
    usages += ["block:ID", "unblock:ID", "password", "deleteaccount", "groupdesc:GID[:DESC]"]
    for usage in usages:
        assert any(line.startswith(usage) for line in console.shown)


async def test_loginout_goes_back_to_the_menu_on_the_same_connection() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "loginout", "1", "bob", "pw")
        await server.received(1, count=2)
        console.type("quit")
        await finished(done)
    assert [r["msgid"] for r in server.requests if r["msgid"] != 19] == [1, 3, 1, 3]
    assert server.connections == 1
    assert "logged out" in console.shown


async def test_a_kick_is_shown_and_leads_back_to_the_menu() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send({"msgid": 15, "errmsg": "logged in from somewhere else"})
        await console.shows("logged out: logged in from somewhere else")
        console.type("3")
        await finished(done)
    assert console.shown.count("1. login") == 2


def test_reconnection_waits_double_from_half_a_second_up_to_ten() -> None:
    steady = backoff_delays(0.5, 10.0, jitter=lambda: 1.0)
    assert [next(steady) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    jittered = backoff_delays()
    delays = [next(jittered) for _ in range(50)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(delay <= 10.0 for delay in delays)
    assert min(delays[10:]) >= 8.0  # the jitter stays near the bound


def logins(server: FakeServer) -> list[tuple[Any, Any, Any]]:
    return [(r.get("id"), r.get("name"), r["password"]) for r in server.requests if r["msgid"] == 1]


async def test_a_dropped_connection_reconnects_and_logs_in_again_saying_so_in_one_line() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "s3cret")
        await server.received(19)
        await server.hang_up()
        await console.shows("logged in again")
        console.type("chat:2:back again")
        chats = await server.received(6)
        console.type("quit")
        await finished(done)
    address = f"127.0.0.1:{server.port}"
    reconnected = f"reconnected to {address} and logged in again"
    assert console.shown[-2:] == ["connection lost, reconnecting...", reconnected]
    assert console.shown.count("current login user >> id: 1 name: alice") == 1
    assert logins(server) == [(None, "alice", "s3cret"), (1, None, "s3cret")]
    assert chats[0]["msg"] == "back again"
    assert server.connections == 2


async def test_while_the_server_is_down_commands_say_not_connected_and_nothing_is_sent() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        await server.received(19)
        port = server.port
        await server.go_down()  # connecting is refused until it comes back
        await console.shows("connection lost")
        await anyio.sleep(0.5)  # several attempts to reconnect fail meanwhile
        console.type("chat:2:are you there?", "addgroup:3")
        await console.shows("addgroup: not connected")
        async with running(server, port):
            await console.shows("logged in again")
            console.type("chat:2:now I am back")
            await server.received(6)
            console.type("quit")
            await finished(done)
    not_sent = f"not connected (reconnecting to 127.0.0.1:{port}), nothing was sent"
    assert f"chat: {not_sent}" in console.shown
    assert f"addgroup: {not_sent}" in console.shown
    assert console.shown.count("connection lost, reconnecting...") == 1
    assert [r["msg"] for r in server.requests if r["msgid"] == 6] == ["now I am back"]
    assert not [r for r in server.requests if r["msgid"] == 9]


async def test_the_end_of_input_while_disconnected_quits_cleanly() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.go_down()
        await console.shows("connection lost")
        console.typed.close()
        await finished(done)


async def test_at_the_menu_a_lost_connection_comes_back_without_logging_in() -> None:
    server = FakeServer()
    async with terminal(server, heartbeat_interval=0.05) as (console, done):
        await server.received(16)  # the terminal pings at the menu too
        await server.hang_up()
        await console.shows(f"reconnected to 127.0.0.1:{server.port}")
        console.type("1", "alice", "pw")
        await server.received(1)
        console.type("quit")
        await finished(done)
    assert f"reconnected to 127.0.0.1:{server.port}" in console.shown
    assert logins(server) == [(None, "alice", "pw")]


async def test_a_server_that_hangs_up_at_once_is_not_taken_for_back() -> None:
    server = FakeServer()
    async with terminal(server, heartbeat_interval=0.05) as (console, _):
        await server.received(16)
        server.results["msgid_16"] = lambda request: None  # hang up instead of answering
        await server.received(16, count=4)  # three connections, each hung up at once
        assert [line for line in console.shown if "connection lost" in line] == [
            "connection lost, reconnecting..."
        ]
        assert not [line for line in console.shown if "reconnected" in line]
        del server.results["msgid_16"]
        await console.shows("reconnected")
    assert server.connections >= 4


async def test_after_a_kick_a_lost_connection_does_not_log_in_again() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send({"msgid": 15, "errmsg": "logged in from somewhere else"})
        await console.shows("logged out:")
        await server.hang_up()
        await console.shows(f"reconnected to 127.0.0.1:{server.port}")
    assert len(logins(server)) == 1


async def test_a_refused_login_again_says_why_and_shows_the_menu() -> None:
    answers = iter([LOGIN_REPLY, {"errno": 1, "errmsg": "id or password is invalid!"}])
    server = FakeServer(msgid_1=lambda request: reply_to(request, **next(answers)))
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.hang_up()
        await console.shows("logging in again failed")
        console.type("3")
        await finished(done)
    address = f"127.0.0.1:{server.port}"
    failed = f"reconnected to {address}, but logging in again failed: id or password is invalid!"
    assert console.shown[-len(MENU.splitlines()) - 1 :] == [failed, *MENU.splitlines()]
    assert len(logins(server)) == 2


async def test_a_login_again_that_is_rate_limited_is_tried_again_later() -> None:
    limited = {"errno": 9, "errmsg": "too many requests: slow down"}
    answers = iter([LOGIN_REPLY, limited, LOGIN_REPLY])
    server = FakeServer(msgid_1=lambda request: reply_to(request, **next(answers)))
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.hang_up()
        await console.shows("logged in again")
    assert len(logins(server)) == 3
    assert console.shown.count("connection lost, reconnecting...") == 1
    assert not [line for line in console.shown if "slow down" in line]


async def test_logging_in_again_shows_only_what_this_session_has_not_shown() -> None:
    news = {**CHAT, "msg": "sent while you were cut off", "msg_id": 1500}
    again = {
        **LOGIN_REPLY,
        "offlinemsg": [LOGIN_REPLY["offlinemsg"][0], news],  # 900 was shown before
        "friend_requests": [{"id": 5, "name": "eve"}, {"id": 8, "name": "gina"}],
    }
    answers = iter([LOGIN_REPLY, again])
    server = FakeServer(msgid_1=lambda request: reply_to(request, **next(answers)))
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.hang_up()
        await console.shows("sent while you were cut off")
        receipts = await server.received(19, count=2)
    after = console.shown[console.shown.index("connection lost, reconnecting...") + 1 :]
    assert after == [
        f"reconnected to 127.0.0.1:{server.port} and logged in again",
        "[8] gina asks to be your friend: accept:8 or decline:8",
        "2026-11-26 23:30:00 [2] bob said: sent while you were cut off",
    ]
    assert sorted(receipts[1]["msg_ids"]) == [900, 1500]


async def test_a_connection_lost_during_a_command_says_so_and_reconnects() -> None:
    async with terminal(FakeServer(msgid_6=lambda request: None)) as (console, _):
        console.type("1", "alice", "pw", "chat:2:hi")
        await console.shows("logged in again")
    assert "chat: the connection was lost before the server answered" in console.shown
    assert console.shown.count("connection lost, reconnecting...") == 1


async def test_a_server_that_stops_answering_pings_is_left_for_a_new_connection() -> None:
    server = FakeServer()
    server.ignored.add(16)
    async with terminal(server, heartbeat_interval=0.05, request_timeout=0.3) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await console.shows("logged in again")
    assert server.connections == 2


async def test_the_terminal_pings_the_server_at_the_menu_and_while_logged_in() -> None:
    server = FakeServer()
    async with terminal(server, heartbeat_interval=0.05) as (console, _):
        await server.received(16, count=2)  # the server's login timeout would close it
        console.type("1", "alice", "pw")
        await server.received(1)
        pings = len(await server.received(16))
        await server.received(16, count=pings + 2)


async def test_control_characters_in_a_message_are_shown_escaped() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send({**CHAT, "msg": "line\n\x1b[2Jfake", "msg_id": 1200})
        line = await console.shows("said: line")
    assert line.endswith("said: line\\n\\x1b[2Jfake")


async def run_main(server: FakeServer, stdin: bytes, *, hang_up: bool = False) -> tuple[int, str]:
    """Runs ``main`` in a child process whose stdin is a pipe fed with ``stdin``."""
    code = "import sys; from chatserver.entrypoints.client.terminal import main; "
    code += f"sys.exit(main('127.0.0.1', {server.port}))"
    # Generous: a child Python's start-up plus a reconnect's back-off on a loaded machine.
    with anyio.fail_after(30):
        async with await anyio.open_process([sys.executable, "-c", code]) as process:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(stdin)
            if hang_up:  # the client comes back and logs in again before its input ends
                await server.received(19)
                await server.hang_up()
                await server.received(19, count=2)  # sent once it is logged in again
                await process.stdin.send(b"chat:2:back\n")
                await server.received(6)
            await process.stdin.aclose()
            output = b"".join([chunk async for chunk in process.stdout])
            return await process.wait(), output.decode()


async def test_main_reads_commands_from_a_pipe_and_prints_plain_lines() -> None:
    async with running(FakeServer()) as server:
        code, output = await run_main(server, b"1\nalice\npw\nchat:2:hi\nquit\n")
    assert code == 0
    assert "current login user >> id: 1 name: alice" in output
    assert [r["msgid"] for r in server.requests if r["msgid"] != 19] == [1, 6, 3]
    assert server.requests[0]["device"] == socket.gethostname()[:64]  # the default device


async def test_main_reconnects_when_the_server_drops_it_and_exits_0_at_the_end_of_input() -> None:
    async with running(FakeServer()) as server:
        code, output = await run_main(server, b"1\nalice\npw\n", hang_up=True)
    assert code == 0
    lines = output.splitlines()
    assert "connection lost, reconnecting..." in lines
    assert f"reconnected to 127.0.0.1:{server.port} and logged in again" in lines


def test_main_exits_with_1_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    from chatserver.entrypoints.client.terminal import main

    assert main("127.0.0.1", 1) == 1
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err


# --- version 2: devices, history, catch-up -------------------------------------------------


def kept(pos: int, **fields: Any) -> Frame:
    """A chat from bob to alice at ``pos`` in alice's inbox, msg_id 5000 + pos."""
    return {**CHAT, "msg": f"message at {pos}", "msg_id": 5000 + pos, "pos": pos, **fields}


def test_history_commands_take_an_optional_position() -> None:
    assert parse_command("history:2") == (COMMANDS["history"], [2, None])
    assert parse_command("history:2:57") == (COMMANDS["history"], [2, 57])
    assert parse_command("ghistory:3") == (COMMANDS["ghistory"], [3, None])
    with pytest.raises(BadInput) as raised:
        parse_command("history:2:older")
    assert str(raised.value) == "usage: history:ID[:POS] (POS is a number)"


async def test_the_terminal_logs_in_with_its_device_name() -> None:
    server = FakeServer()
    async with terminal(server, device="phone") as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.hang_up()
        await console.shows("logged in again")
    assert [r["device"] for r in server.requests if r["msgid"] == 1] == ["phone", "phone"]


async def test_own_messages_from_another_device_show_as_you() -> None:
    lines = await session_lines(
        pushes=(
            {**CHAT, "id": 1, "name": "alice", "toid": 2, "msg": "sent from my phone"},
            {**GROUP_CHAT, "id": 1, "name": "alice", "msg": "to the group from my phone"},
            {"msgid": 22, "pos": 3},  # read on another device: nothing to show
            {"msgid": 29, "groupid": 3, "event": "joined", "msg_id": 1300},  # not known yet
            {**CHAT, "msg": "still shown", "msg_id": 1301},
        ),
        expect=3,
    )
    assert lines == [
        "2026-11-26 23:30:00 you -> [2] bob: sent from my phone",
        "group[3] 2026-11-26 23:31:00 you said: to the group from my phone",
        "2026-11-26 23:30:00 [2] bob said: still shown",
    ]


async def test_history_shows_the_newest_page_and_how_to_get_older_ones() -> None:
    page = [kept(5), kept(6, id=1, name="alice", toid=2, msg="my answer")]
    unknown = {"msgid": 99, "msg_id": 1, "pos": 3}  # a newer server's object: not shown
    pages = iter([{"msgs": page, "more": True}, {"msgs": [unknown], "more": False}])
    server = FakeServer(msgid_21=lambda request: reply_to(request, **next(pages)))
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "history:2")
        await console.shows("older messages")
        console.type("history:2:5")
        await console.shows("no older messages")
        console.type("quit")
        await finished(done)
    start = console.shown.index("messages with [2] bob:")
    assert console.shown[start : start + 5] == [
        "messages with [2] bob:",
        "  2026-11-26 23:30:00 [2] bob said: message at 5",
        "  2026-11-26 23:30:00 you -> [2] bob: my answer",
        "older messages: history:2:5",
        "no older messages with [2] bob",
    ]
    sent = [{k: v for k, v in r.items() if k != "seq"} for r in server.requests if r["msgid"] == 21]
    assert sent == [
        {"msgid": 21, "with": 2, "limit": 20},
        {"msgid": 21, "with": 2, "before": 5, "limit": 20},
    ]


async def test_group_history_and_its_errors() -> None:
    def not_a_member(request: Frame) -> Frame:
        if request["groupid"] == 3:
            return reply_to(request, msgs=[kept(4, msgid=10, groupid=3, msg="hi all")], more=False)
        if request["groupid"] == 5:  # only an object of a newer server, and older ones
            return reply_to(request, msgs=[{"msgid": 29, "msg_id": 1, "pos": 40}], more=True)
        return reply_to(request, errno=6, errmsg="you are not a member of that group")

    server = FakeServer(msgid_21=not_a_member)
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "ghistory:3")
        await console.shows("hi all")
        console.type("ghistory:8")
        await console.shows("ghistory:")
        console.type("ghistory:5")
        await console.shows("older messages: ghistory:5:40")
        console.type("quit")
        await finished(done)
    assert "messages in group [3] grp:" in console.shown
    assert not [line for line in console.shown if "no messages" in line]
    assert "  group[3] 2026-11-26 23:30:00 [2] bob said: hi all" in console.shown
    assert "ghistory: you are not a member of that group" in console.shown


async def test_after_a_reconnect_it_syncs_from_its_last_pos_and_shows_only_what_is_new() -> None:
    first = {**LOGIN_REPLY, "last_pos": 10, "read_pos": 0}
    again = {**LOGIN_REPLY, "offlinemsg": [kept(13)], "last_pos": 16, "read_pos": 0}
    logins = iter([first, again])
    own = {"id": 1, "name": "alice", "toid": 2, "msg": "my own", "msg_id": 2000}
    synced = [kept(12, **own), kept(13), kept(14), kept(15), kept(16)]
    pages = iter([{"msgs": synced[:3], "last_pos": 16}, {"msgs": synced[3:], "last_pos": 17}])
    server = FakeServer(
        msgid_1=lambda request: reply_to(request, **next(logins)),
        msgid_6=lambda request: reply_to(request, msg_id=2000, pos=12),
        msgid_20=lambda request: reply_to(request, **next(pages)),
    )
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send(kept(11))
        await console.shows("message at 11")
        console.type("chat:2:my own", "addfriend:42")  # one command runs after the other
        await console.shows("friend request sent to [42]")
        await server.hang_up()
        await console.shows("message at 16")
        syncs = await server.received(20, count=2)
    assert [(r["since"], r["limit"]) for r in syncs] == [(13, 200), (14, 200)]
    after = console.shown[console.shown.index("connection lost, reconnecting...") + 1 :]
    assert after == [
        f"reconnected to 127.0.0.1:{server.port} and logged in again",
        *(f"2026-11-26 23:30:00 [2] bob said: message at {pos}" for pos in (13, 14, 15, 16)),
    ]


async def test_a_catch_up_that_finds_messages_gone_says_so() -> None:
    first = {**LOGIN_REPLY, "last_pos": 10}
    again = {**LOGIN_REPLY, "offlinemsg": [], "last_pos": 900}
    logins = iter([first, again])
    page = {"msgs": [kept(800)], "last_pos": 900, "truncated": True}
    pages = iter([page, {"msgs": [], "last_pos": 900}])
    server = FakeServer(
        msgid_1=lambda request: reply_to(request, **next(logins)),
        msgid_20=lambda request: reply_to(request, **next(pages)),
    )
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.hang_up()
        await console.shows("message at 800")
        await server.received(20, count=2)
    assert "some messages from while you were away are no longer kept" in console.shown


class Relay:
    """A TCP relay to a real node whose connections the test cuts, as a network would; while
    ``down``, it hangs up on every new connection at once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.down = False
        self.links: list[anyio.CancelScope] = []

    async def serve(self, client: SocketStream) -> None:
        async with client:
            if self.down:
                return
            async with await anyio.connect_tcp("127.0.0.1", self.target) as upstream:
                with anyio.CancelScope() as link:
                    self.links.append(link)
                    async with anyio.create_task_group() as pumps:
                        pumps.start_soon(self._pump, client, upstream, link)
                        pumps.start_soon(self._pump, upstream, client, link)

    async def _pump(self, source: Any, sink: Any, link: anyio.CancelScope) -> None:
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for chunk in source:
                await sink.send(chunk)
        link.cancel()

    def cut(self) -> None:
        self.down = True
        for link in self.links:
            link.cancel()


async def test_against_a_real_node_a_reconnect_shows_every_missed_message_once_in_order() -> None:
    # The node gives a login at most 3 waiting messages (the newest): the rest come by SYNC.
    async with (
        node_on_tcp(Limits(stored_per_user=3)) as node_port,
        connect("127.0.0.1", node_port) as bob,
        connect("127.0.0.1", node_port) as phone,
        anyio.create_task_group() as task_group,
    ):
        bob_id = await bob.register("bob", "pw")
        alice_id = await phone.register("alice", "pw")
        await bob.login(bob_id, "pw")
        relay = Relay(node_port)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        relay.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_group.start_soon(listener.serve, relay.serve)
        console = FakeConsole()
        shell = Terminal(
            "127.0.0.1", relay.port, console, backoff_first=0.05, backoff_max=0.2, device="pc"
        )
        task_group.start_soon(shell.run)

        console.type("1", str(alice_id), "pw")
        await console.shows("current login user")
        await bob.send_chat(alice_id, "before the cut")
        await console.shows("before the cut")
        console.type(f"chat:{bob_id}:typed on the pc")
        assert isinstance(await bob.next_event(), DirectMessage)

        relay.cut()
        await console.shows("connection lost")
        await phone.login(alice_id, "pw", device="phone")
        for n in range(4):
            await bob.send_chat(alice_id, f"missed {n}")
        await phone.send_chat(bob_id, "sent from my phone")
        for n in range(4, 6):
            await bob.send_chat(alice_id, f"missed {n}")
        relay.down = False
        await console.shows("missed 5")
        await anyio.sleep(0.3)  # anything shown twice would show by now
        task_group.cancel_scope.cancel()
    after = console.shown[console.shown.index("connection lost, reconnecting...") + 1 :]
    assert [line.split(" ", 2)[2] for line in after[1:]] == [
        *(f"[{bob_id}] bob said: missed {n}" for n in range(4)),
        f"you -> [{bob_id}]: sent from my phone",
        *(f"[{bob_id}] bob said: missed {n}" for n in range(4, 6)),
    ]
    assert shell.pos == 9 and not shell.later  # 1 before the cut, 2 typed, 3-9 missed


def test_a_removed_friend_is_described_by_name() -> None:
    from chatserver.entrypoints.client.library import FriendRemoved
    from chatserver.entrypoints.client.terminal import describe

    assert describe(FriendRemoved(2), {2: "bob"}) == "[2] bob is no longer your friend"


# --- group administration, blocking and the account (Version 2) ------------------------------


async def test_group_admin_block_and_account_commands_send_their_requests() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw")
        console.type("kick:3:2", "mute:3:2:10", "mute:3:4", "unmute:3:2", "role:3:2:Admin")
        console.type("transfer:3:2", "renamegroup:3:new name", "groupdesc:3:all about: it")
        console.type("groupdesc:3", "block:2", "unblock:2", "dissolve:3", "yes")
        console.type("password", "pw", "pw2")
        await server.received(32)
        await console.shows("password changed")
        console.type("quit")
        await finished(done)
    sent = [{k: v for k, v in r.items() if k != "seq"} for r in server.requests]
    mutes = [r for r in sent if r["msgid"] == 27]
    now_ms = time.time() * 1000
    assert [r["until"] for r in mutes][2] == 0
    assert 9 * 60_000 < mutes[0]["until"] - now_ms <= 10 * 60_000
    assert 59 * 60_000 < mutes[1]["until"] - now_ms <= 60 * 60_000  # an hour by default
    for request in [
        {"msgid": 23, "groupid": 3, "userid": 2},
        {"msgid": 24, "groupid": 3, "userid": 2, "role": "admin"},
        {"msgid": 25, "groupid": 3, "userid": 2},
        {"msgid": 28, "groupid": 3, "groupname": "new name"},
        {"msgid": 28, "groupid": 3, "groupdesc": "all about: it"},
        {"msgid": 28, "groupid": 3, "groupdesc": ""},
        {"msgid": 30, "userid": 2, "block": True},
        {"msgid": 30, "userid": 2, "block": False},
        {"msgid": 26, "groupid": 3},
        {"msgid": 32, "action": "password", "password": "pw", "new_password": "pw2"},
    ]:
        assert request in sent
    # the passwords were asked for as secrets, and never shown
    assert ("current password: ", True) in console.prompts
    assert ("new password: ", True) in console.prompts
    assert not [line for line in console.shown if "pw2" in line]
    for line in [
        "removed [2] from group [3] grp",
        "[2] is now admin in group [3] grp",
        "[2] is now the creator of group [3] grp; you are an admin",
        "group [3] is now called new name",
        "blocked [2] bob",
        "unblocked [2]",
        "dissolved group [3] new name",
    ]:
        assert line in console.shown


async def test_a_dissolve_not_confirmed_and_a_bad_role_send_nothing() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "role:3:2:creator", "dissolve:3", "no", "mute:3:2:0")
        await console.shows("stays")
        await console.shows("MINUTES above 0")
        console.type("quit")
        await finished(done)
    assert "usage: role:GID:ID:ROLE (ROLE is admin or normal)" in console.shown
    assert "group [3] grp stays" in console.shown
    assert not [r for r in server.requests if r["msgid"] in (24, 26, 27)]


async def test_deleteaccount_asks_for_the_password_and_goes_back_to_the_menu() -> None:
    server = FakeServer()
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "deleteaccount", "pw")
        await console.shows("your account was deleted")
        console.type("3")
        await finished(done)
    assert {"msgid": 32, "action": "delete", "password": "pw"} in [
        {k: v for k, v in r.items() if k != "seq"} for r in server.requests
    ]
    assert ("type your password to confirm: ", True) in console.prompts
    assert console.shown.count("1. login") == 2


async def test_a_wrong_password_leaves_the_account_and_says_so() -> None:
    def wrong(request: Frame) -> Frame:
        return reply_to(request, errno=1, errmsg="wrong password")

    server = FakeServer(msgid_32=wrong)
    async with terminal(server) as (console, done):
        console.type("1", "alice", "pw", "deleteaccount", "nope")
        assert await console.shows("deleteaccount:") == "deleteaccount: wrong password"
        console.type("quit")
        await finished(done)
    assert console.shown.count("1. login") == 1


async def test_against_a_real_node_a_creator_kicks_and_blocks_from_the_terminal() -> None:
    async with (
        node_on_tcp() as port,
        connect("127.0.0.1", port) as bob,
        anyio.create_task_group() as task_group,
    ):
        alice_id = await bob.register("alice", "pw")
        bob_id = await bob.register("bob", "pw")
        await bob.login(bob_id, "pw")
        console = FakeConsole()
        shell = Terminal("127.0.0.1", port, console, device="pc")
        task_group.start_soon(shell.run)
        console.type("1", str(alice_id), "pw", "creategroup:team")
        group_line = await console.shows("created group")
        group_id = int(group_line.split("[")[1].split("]")[0])
        await bob.join_group(group_id)
        await console.shows(f"group[{group_id}] joined: [{bob_id}]")

        console.type(f"kick:{group_id}:{bob_id}")
        kicked = await next_group_event(bob, "kicked")
        await console.shows(f"group[{group_id}] kicked: [{bob_id}] by [{alice_id}]")
        with pytest.raises(ChatError) as gone:
            await bob.send_group_chat(group_id, "still here?")

        console.type(f"block:{bob_id}")
        await console.shows(f"blocked [{bob_id}]")
        with pytest.raises(ChatError) as blocked:
            await bob.send_chat(alice_id, "let me in")
        console.type(f"unblock:{bob_id}")
        await console.shows(f"unblocked [{bob_id}]")
        await bob.send_chat(alice_id, "thanks")
        await console.shows("said: thanks")
        task_group.cancel_scope.cancel()
    assert (kicked.event, kicked.user_id, kicked.by) == ("kicked", bob_id, alice_id)
    assert gone.value.errno == 6
    assert blocked.value.errno == 12
    assert f"removed [{bob_id}] from group [{group_id}] team" in console.shown


async def next_group_event(client: ChatClient, kind: str) -> GroupEvent:
    """The next GROUP_EVENT of this kind (past the client's own "joined" and the like)."""
    while True:
        event = await client.next_event()
        if isinstance(event, GroupEvent) and event.event == kind:
            return event


def test_what_another_member_did_to_you_is_said_in_words() -> None:
    from chatserver.entrypoints.client.terminal import describe

    def event(kind: str, user_id: int, by: int, until: int | None = None) -> GroupEvent:
        return GroupEvent(1004, 3, kind, user_id, by, 9, until=until)

    assert (
        describe(event("kicked", 1, 2), {}, 1) == "group[3] you were removed from the group by [2]"
    )
    assert describe(event("kicked", 2, 1), {}, 1) == "group[3] kicked: [2] by [1]"
    assert describe(event("muted", 1, 2, 0), {}, 1) == (
        "group[3] you may chat again (unmuted by [2])"
    )
    muted = describe(event("muted", 1, 2, 1796420976810), {}, 1)
    assert muted is not None and muted.startswith("group[3] you are muted until 2026-")


async def test_sendfile_without_a_web_port_or_a_file_says_so_and_the_terminal_goes_on(
    tmp_path: Any,
) -> None:
    """QA: `sendfile:2:PATH` without --web-port (a ValueError), of a path that is not there
    (FileNotFoundError) or of a folder (aiohttp's OSError) ended the terminal client with a
    traceback. Each is now a one-line hint, nothing is asked of the server, and the next
    command works."""
    (tmp_path / "report.txt").write_text("x")
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("1", "alice", "pw", f"sendfile:2:{tmp_path / 'report.txt'}")
        hint = await console.shows("sendfile:")
        assert "--web-port" in hint, hint
        console.type("chat:2:still here")
        assert (await server.received(6))[0]["msg"] == "still here"
    server = FakeServer()
    async with terminal(server, web_port=9) as (console, _):
        console.type("1", "alice", "pw", f"sendfile:2:{tmp_path / 'missing.txt'}",
                     f"gsendfile:3:{tmp_path}", "chat:2:still here")
        assert (await server.received(6))[0]["msg"] == "still here"
        assert f"sendfile: {tmp_path / 'missing.txt'} is no file: give the path of a file" in (
            console.shown)
        assert f"gsendfile: {tmp_path} is a folder: give the path of a file" in console.shown
    assert not [frame for frame in server.requests if frame["msgid"] == 33]
