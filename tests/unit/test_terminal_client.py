"""The terminal client: commands, what it shows, receipts, against a tiny fake server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from chatserver.entrypoints.client.library import ChatClient, connect
from chatserver.entrypoints.client.terminal import COMMANDS, BadInput, Terminal, parse_command

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

    A result of None hangs up instead of answering.
    """

    def __init__(self, **results: Callable[[Frame], Frame | None]) -> None:
        self.results = results
        self.requests: list[Frame] = []
        self.connections = 0
        self.connection: SocketStream | None = None
        self.port = 0
        self.arrival = anyio.Event()
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


@asynccontextmanager
async def running(server: FakeServer) -> AsyncIterator[FakeServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, server.serve)
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

    async def shows(self, fragment: str) -> str:
        """Waits (briefly) for a shown line containing ``fragment`` and returns it."""
        with anyio.fail_after(3):
            while not (found := [line for line in self.shown if fragment in line]):
                await self.changed.wait()
        return found[0]


ExitCode = MemoryObjectReceiveStream[int]


@asynccontextmanager
async def terminal(
    server: FakeServer, *, heartbeat_interval: float = 60.0
) -> AsyncIterator[tuple[FakeConsole, ExitCode]]:
    """Runs a Terminal against ``server``; its exit code comes out of the stream it yields."""
    console = FakeConsole()
    exit_sender, exit_codes = anyio.create_memory_object_stream[int](1)

    async def run(client: ChatClient) -> None:
        shell = Terminal(client, console, heartbeat_interval=heartbeat_interval)
        exit_sender.send_nowait(await shell.run())

    with anyio.fail_after(5):
        async with (
            running(server),
            connect("127.0.0.1", server.port) as client,
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(run, client)
            yield console, exit_codes
            task_group.cancel_scope.cancel()
    for stream in (console.typed, console.lines, exit_sender, exit_codes):
        stream.close()


async def finished(exit_codes: ExitCode) -> int:
    with anyio.fail_after(3):
        return await exit_codes.receive()


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
    async with terminal(FakeServer()) as (console, exit_codes):
        console.type("1", "alice", "s3cret")
        await console.shows("messages while you were away")
        console.type("quit")
        assert await finished(exit_codes) == 0
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
    async with terminal(server) as (console, exit_codes):
        console.type("1", "alice", "pw", "addfriend:42")
        assert await console.shows("addfriend:") == "addfriend: no such user"
        console.type("quit")
        assert await finished(exit_codes) == 0


async def test_a_failed_login_prints_the_reason_and_shows_the_menu_again() -> None:
    def invalid(request: Frame) -> Frame:
        return reply_to(request, errno=1, errmsg="id or password is invalid!")

    async with terminal(FakeServer(msgid_1=invalid)) as (console, exit_codes):
        console.type("1", "alice", "wrong")
        assert await console.shows("login failed") == "login failed: id or password is invalid!"
        console.type("3")
        assert await finished(exit_codes) == 0


async def test_register_shows_the_new_user_id() -> None:
    server = FakeServer()
    async with terminal(server) as (console, _):
        console.type("2", "carol", "pw")
        assert await console.shows("registered") == "registered: your user id is 7"
    assert server.requests[0] | {"seq": 0} == {
        "msgid": 4,
        "name": "carol",
        "password": "pw",
        "seq": 0,
    }


async def test_commands_send_their_requests_and_say_what_happened() -> None:
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
    assert "created group [9] grp" in console.shown
    assert "[5] is now your friend" in console.shown


async def test_help_lists_every_command() -> None:
    async with terminal(FakeServer()) as (console, _):
        console.type("1", "alice", "pw", "help")
        await console.shows("log out and leave")
    for usage in ["chat:ID:MESSAGE", "creategroup:NAME[:DESC]", "groupchat:GID:MESSAGE", "quit"]:
        assert any(line.startswith(usage) for line in console.shown)


async def test_loginout_goes_back_to_the_menu_on_the_same_connection() -> None:
    server = FakeServer()
    async with terminal(server) as (console, exit_codes):
        console.type("1", "alice", "pw", "loginout", "1", "bob", "pw")
        await server.received(1, count=2)
        console.type("quit")
        assert await finished(exit_codes) == 0
    assert [r["msgid"] for r in server.requests if r["msgid"] != 19] == [1, 3, 1, 3]
    assert server.connections == 1
    assert "logged out" in console.shown


async def test_a_kick_is_shown_and_leads_back_to_the_menu() -> None:
    server = FakeServer()
    async with terminal(server) as (console, exit_codes):
        console.type("1", "alice", "pw")
        await server.received(19)
        await server.send({"msgid": 15, "errmsg": "logged in from somewhere else"})
        await console.shows("logged out: logged in from somewhere else")
        console.type("3")
        assert await finished(exit_codes) == 0
    assert console.shown.count("1. login") == 2


async def test_a_dropped_connection_prints_one_line_and_exits_with_1() -> None:
    server = FakeServer()
    async with terminal(server) as (console, exit_codes):
        console.type("1", "alice", "pw")
        await server.received(19)
        assert server.connection is not None
        await server.connection.aclose()
        assert await finished(exit_codes) == 1
    assert console.shown[-1] == "the connection to the server was lost"


async def test_a_connection_lost_during_a_command_prints_one_line_and_exits_with_1() -> None:
    async with terminal(FakeServer(msgid_6=lambda request: None)) as (console, exit_codes):
        console.type("1", "alice", "pw", "chat:2:hi")
        assert await finished(exit_codes) == 1
    assert console.shown.count("the connection to the server was lost") == 1


async def test_the_terminal_pings_the_server_while_logged_in() -> None:
    server = FakeServer()
    async with terminal(server, heartbeat_interval=0.05) as (console, _):
        await anyio.sleep(0.15)
        assert not [r for r in server.requests if r["msgid"] == 16]
        console.type("1", "alice", "pw")
        await server.received(16, count=2)


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
    with anyio.fail_after(10):
        async with await anyio.open_process([sys.executable, "-c", code]) as process:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(stdin)
            if hang_up:  # keep stdin open: the client must still exit when the server goes
                await server.received(19)
                assert server.connection is not None
                await server.connection.aclose()
            else:
                await process.stdin.aclose()
            output = b"".join([chunk async for chunk in process.stdout])
            return await process.wait(), output.decode()


async def test_main_reads_commands_from_a_pipe_and_prints_plain_lines() -> None:
    async with running(FakeServer()) as server:
        code, output = await run_main(server, b"1\nalice\npw\nchat:2:hi\nquit\n")
    assert code == 0
    assert "current login user >> id: 1 name: alice" in output
    assert [r["msgid"] for r in server.requests if r["msgid"] != 19] == [1, 6, 3]


async def test_main_exits_with_1_when_the_server_goes_away() -> None:
    async with running(FakeServer()) as server:
        code, output = await run_main(server, b"1\nalice\npw\n", hang_up=True)
    assert code == 1
    assert output.strip().endswith("the connection to the server was lost")


def test_main_exits_with_1_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    from chatserver.entrypoints.client.terminal import main

    assert main("127.0.0.1", 1) == 1
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err
