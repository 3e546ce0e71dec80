"""The interactive terminal client: a login menu, then one-line commands such as ``chat:2:hi``.

Pushes from the server print as they arrive. On a terminal, prompt_toolkit keeps them from
garbling the line being typed; when stdin is a pipe or a file, lines are read and printed plainly.
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from enum import Enum, auto
from typing import Protocol

import anyio
from anyio import CancelScope
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from attrs import frozen
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from chatserver.entrypoints.client.library import (
    ChatClient,
    ChatError,
    ConnectionLost,
    Delivery,
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRequest,
    GroupMessage,
    Kicked,
    LoginResult,
    Presence,
    connect,
)

HEARTBEAT_INTERVAL = 20.0
RECEIPT_DELAY = 0.2  # gathers the receipts of messages that arrive together into one request
MENU = "==========\n1. login\n2. register\n3. quit\n=========="
RULE = "=" * 50
CONNECTION_LOST = "the connection to the server was lost"


class Console(Protocol):
    """Where the terminal client reads what the user types and shows lines."""

    async def read_line(self, prompt: str, *, secret: bool = False) -> str | None:
        """Returns the next line typed, or None when the input has ended."""
        ...

    def show(self, text: str) -> None: ...


class PromptConsole:
    """A console on a terminal: lines shown while the user types print above the prompt."""

    def __init__(self) -> None:
        self._session: PromptSession[str] = PromptSession()

    async def read_line(self, prompt: str, *, secret: bool = False) -> str | None:
        # Passwords get a session of their own, so they never enter the history.
        session: PromptSession[str] = PromptSession() if secret else self._session
        try:
            return await session.prompt_async(prompt, is_password=secret)
        except (EOFError, KeyboardInterrupt):
            return None

    def show(self, text: str) -> None:
        print(text)


class PipeConsole:
    """A console on a pipe or a file: no prompts, plain lines."""

    def __init__(self, lines: MemoryObjectReceiveStream[str]) -> None:
        self._lines = lines

    @classmethod
    def start(cls, fd: int = 0) -> PipeConsole:
        """Starts reading ``fd`` in a daemon thread, which never holds up the end of the program."""
        sender, receiver = anyio.create_memory_object_stream[str](16)
        thread = threading.Thread(target=_pump_lines, args=(fd, sender, current_token()))
        thread.daemon = True
        thread.start()
        return cls(receiver)

    async def read_line(self, prompt: str, *, secret: bool = False) -> str | None:
        try:
            return await self._lines.receive()
        except anyio.EndOfStream:
            return None

    def show(self, text: str) -> None:
        print(text, flush=True)


def _pump_lines(fd: int, sink: MemoryObjectSendStream[str], token: EventLoopToken) -> None:
    # os.read rather than sys.stdin: a daemon thread blocked inside a buffered file's lock can
    # abort the interpreter at exit.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    with suppress(Exception):  # the client has finished, or the input broke: stop feeding
        while chunk := os.read(fd, 65536):
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            for line in lines:
                anyio.from_thread.run(sink.send, line.removesuffix("\r"), token=token)
        if pending:
            anyio.from_thread.run(sink.send, pending, token=token)
    with suppress(Exception):
        anyio.from_thread.run_sync(sink.close, token=token)


class BadInput(Exception):
    """A command line that cannot be run; the message is the hint to show."""


class Step(Enum):
    """Where the command loop goes after a command."""

    MENU = auto()
    QUIT = auto()


@frozen
class Command:
    """A command the user can type: ``name:PARAM:PARAM``; ``*ID`` params are numbers."""

    name: str
    params: tuple[str, ...]
    run: Callable[..., Awaitable[Step | None]]
    about: str
    optional: int = 0  # how many trailing params may be left out (they become "")

    @property
    def usage(self) -> str:
        split = len(self.params) - self.optional
        required = ":".join((self.name, *self.params[:split]))
        return required + "".join(f"[:{param}]" for param in self.params[split:])


def parse_command(line: str) -> tuple[Command, list[int | str]]:
    """Splits a typed line into its command and arguments, or raises BadInput with a hint."""
    name, colon, rest = line.strip().partition(":")
    command = COMMANDS.get(name.strip().lower())
    if command is None:
        raise BadInput("invalid input command! type help to see the commands")
    params = command.params
    texts = rest.split(":", len(params) - 1) if params and colon else []
    texts += [""] * min(command.optional, len(params) - len(texts))
    if len(texts) != len(params) or (rest and not params):
        raise BadInput(f"usage: {command.usage}")
    required = len(params) - command.optional
    args: list[int | str] = []
    for index, (param, text) in enumerate(zip(params, texts, strict=True)):
        if param.endswith("ID"):
            try:
                args.append(int(text))
            except ValueError:
                raise BadInput(f"usage: {command.usage} ({param} is a number)") from None
        elif not text and index < required:
            raise BadInput(f"usage: {command.usage} ({param} must not be empty)")
        else:
            args.append(text)
    return command, args


def printable(text: str) -> str:
    """Escapes control characters, so that a message cannot move the cursor or fake a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def describe(event: Event, names: dict[int, str]) -> str | None:
    """The line that shows an event, or None for what is not worth showing."""
    match event:
        case DirectMessage():
            sender = f"[{event.sender_id}] {printable(event.sender_name)}"
            return f"{event.time} {sender} said: {printable(event.text)}"
        case GroupMessage():
            sender = f"[{event.sender_id}] {printable(event.sender_name)}"
            return f"group[{event.group_id}] {event.time} {sender} said: {printable(event.text)}"
        case FriendAnswer():
            answer = "accepted" if event.accepted else "declined"
            who = f"[{event.responder_id}] {printable(event.responder_name)}"
            return f"{who} {answer} your friend request"
        case FriendRequest():
            asker = event.requester_id
            return (
                f"[{asker}] {printable(event.requester_name)} asks to be your friend: "
                f"accept:{asker} or decline:{asker}"
            )
        case Presence():
            name = names.get(event.user_id)
            who = f"[{event.user_id}] {printable(name)}" if name else f"[{event.user_id}]"
            return f"friend {who} is {'online' if event.online else 'offline'}"
        case Kicked():
            return f"logged out: {printable(event.reason) or 'your account logged in elsewhere'}"
    return None


def describe_login(login: LoginResult) -> str:
    """The block shown after a successful login."""
    lines = [RULE, f"current login user >> id: {login.user_id} name: {printable(login.name)}"]
    lines.append("friends:" if login.friends else "friends: none")
    for friend in login.friends:
        state = "online" if friend.online else "offline"
        lines.append(f"  [{friend.id}] {printable(friend.name)} {state}")
    lines.append("groups:" if login.groups else "groups: none")
    for group in login.groups:
        lines.append(f"  [{group.id}] {printable(group.name)}: {printable(group.description)}")
        for member in group.members:
            state = "online" if member.online else "offline"
            lines.append(f"      [{member.id}] {printable(member.name)} {state} {member.role}")
    if login.friend_requests:
        lines.append("friend requests:")
        for request in login.friend_requests:
            who = request.requester_id
            name = printable(request.requester_name)
            lines.append(f"  [{who}] {name}: accept:{who} or decline:{who}")
    shown = [line for line in (describe(m, {}) for m in login.offline_messages) if line]
    if shown:
        lines.append("messages while you were away:")
        lines.extend(f"  {line}" for line in shown)
    lines.append(RULE)
    return "\n".join(lines)


def _msg_id(event: Event) -> int | None:
    return event.msg_id if isinstance(event, Delivery) else None


class Terminal:
    """One run of the terminal client on one connection, from the menu to quit."""

    def __init__(
        self,
        client: ChatClient,
        console: Console,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.client = client
        self.console = console
        self.heartbeat_interval = heartbeat_interval
        self.user_name = ""
        self.names: dict[int, str] = {}  # user id -> name, to name friends in presence lines
        self.seen: set[int] = set()  # msg_ids shown since login: redeliveries are not shown twice
        self.unreceipted: list[int] = []
        self.receipts_due = anyio.Event()
        self.screen = anyio.Lock()  # keeps the login block ahead of the pushes that follow it
        self.session_scope: CancelScope | None = None
        self.main_scope: CancelScope | None = None
        self.exit_code: int | None = None

    async def run(self) -> int:
        """Runs the menu until the user quits; returns the exit code (1: connection lost)."""
        async with anyio.create_task_group() as task_group:
            self.main_scope = task_group.cancel_scope
            task_group.start_soon(self._show_events)
            task_group.start_soon(self._send_receipts)
            try:
                await self._menu()
                self.exit_code = 0
            except* ConnectionLost:  # it may come out of a session's task group, in a group
                self._lost(CONNECTION_LOST)
            task_group.cancel_scope.cancel()
        return 1 if self.exit_code is None else self.exit_code

    async def _menu(self) -> None:
        self.console.show(MENU)
        while True:
            choice = await self.console.read_line("choice: ")
            if choice is None or choice.strip() == "3":
                return
            if choice.strip() == "1":
                if await self._login() is Step.QUIT:
                    return
                self.console.show(MENU)
            elif choice.strip() == "2":
                await self._register()
            elif choice.strip():
                self.console.show("invalid choice: type 1 to log in, 2 to register, 3 to quit")

    async def _register(self) -> None:
        name = await self.console.read_line("username: ")
        password = await self.console.read_line("password: ", secret=True)
        if name is None or password is None:
            return  # the input has ended: the menu quits
        if not name.strip() or not password:
            self.console.show("a name and a password are needed")
            return
        with self._errors_shown("register failed"):
            user_id = await self.client.register(name.strip(), password)
            self.console.show(f"registered: your user id is {user_id}")

    async def _login(self) -> Step:
        who = await self.console.read_line("userid or name: ")
        password = await self.console.read_line("password: ", secret=True)
        if who is None or password is None:
            return Step.QUIT
        who = who.strip()
        if not who or not password:
            self.console.show("a user id (or name) and a password are needed")
            return Step.MENU
        login: LoginResult | None = None
        async with self.screen:
            with self._errors_shown("login failed"):
                login = await self.client.login(int(who) if who.isdigit() else who, password)
            if login is not None:
                self._begin(login)
        if login is None:
            return Step.MENU
        return await self._session()

    def _begin(self, login: LoginResult) -> None:
        self.user_name = login.name
        self.names = {friend.id: friend.name for friend in login.friends}
        self.seen = set()
        self.unreceipted = []
        self.console.show(describe_login(login))
        for delivery in login.offline_messages:
            self._shown(_msg_id(delivery))

    async def _session(self) -> Step:
        step = Step.MENU  # what is left if a kick cancels the session
        async with anyio.create_task_group() as task_group:
            self.session_scope = task_group.cancel_scope
            task_group.start_soon(self._heartbeat)
            step = await self._commands()
            task_group.cancel_scope.cancel()
        self.session_scope = None
        return step

    async def _commands(self) -> Step:
        while True:
            line = await self.console.read_line(f"{printable(self.user_name)}> ")
            if line is None:
                return await _quit(self)
            if not line.strip():
                continue
            try:
                command, args = parse_command(line)
            except BadInput as hint:
                self.console.show(str(hint))
                continue
            with self._errors_shown(command.name):
                step = await command.run(self, *args)
                if step is not None:
                    return step

    @contextmanager
    def _errors_shown(self, what: str) -> Iterator[None]:
        try:
            yield
        except ChatError as error:
            self.console.show(f"{what}: {printable(error.errmsg) or f'errno {error.errno}'}")
        except TimeoutError:
            self.console.show(f"{what}: the server did not answer in time")

    async def _show_events(self) -> None:
        async for event in self.client.events():
            async with self.screen:
                self._show(event)
        self._lost(CONNECTION_LOST)

    def _show(self, event: Event) -> None:
        if isinstance(event, FriendAnswer) and event.accepted:
            self.names[event.responder_id] = event.responder_name
        msg_id = _msg_id(event)
        line = describe(event, self.names)
        if line and msg_id not in self.seen:
            self.console.show(line)
        self._shown(msg_id)
        if isinstance(event, Kicked):
            self.unreceipted = []  # the server logged this session out: it keeps them for later
            if self.session_scope is not None:
                self.session_scope.cancel()

    def _shown(self, msg_id: int | None) -> None:
        if msg_id is not None:
            self.seen.add(msg_id)
            self.unreceipted.append(msg_id)
            self.receipts_due.set()

    async def _send_receipts(self) -> None:
        while True:
            await self.receipts_due.wait()
            await anyio.sleep(RECEIPT_DELAY)
            await self.flush_receipts()

    async def flush_receipts(self) -> None:
        """Tells the server which deliveries have been shown, so it stops keeping them."""
        self.receipts_due = anyio.Event()
        msg_ids, self.unreceipted = self.unreceipted, []
        if msg_ids:
            # Failing is harmless: the server delivers them again at the next login.
            with suppress(ChatError, TimeoutError, ConnectionLost):
                await self.client.receipt(msg_ids)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                await self.client.ping()
            except TimeoutError:
                self._lost("the server stopped answering")
            except (ChatError, ConnectionLost):
                pass  # a lost connection is reported by _show_events

    def _lost(self, reason: str) -> None:
        if self.exit_code is None:
            self.exit_code = 1
            self.console.show(reason)
        if self.main_scope is not None:
            self.main_scope.cancel()


async def _help(terminal: Terminal) -> None:
    width = max(len(command.usage) for command in COMMANDS.values())
    for command in COMMANDS.values():
        terminal.console.show(f"{command.usage:<{width}}  {command.about}")


async def _chat(terminal: Terminal, to_id: int, text: str) -> None:
    await terminal.client.send_chat(to_id, text)


async def _add_friend(terminal: Terminal, friend_id: int) -> None:
    await terminal.client.add_friend(friend_id)
    terminal.console.show(f"friend request sent to [{friend_id}]")


async def _accept(terminal: Terminal, friend_id: int) -> None:
    await terminal.client.answer_friend(friend_id, True)
    terminal.console.show(f"[{friend_id}] is now your friend")


async def _decline(terminal: Terminal, friend_id: int) -> None:
    await terminal.client.answer_friend(friend_id, False)
    terminal.console.show(f"declined the friend request of [{friend_id}]")


async def _remove_friend(terminal: Terminal, friend_id: int) -> None:
    await terminal.client.remove_friend(friend_id)
    terminal.console.show(f"[{friend_id}] is no longer your friend")


async def _create_group(terminal: Terminal, name: str, description: str) -> None:
    group_id = await terminal.client.create_group(name, description)
    terminal.console.show(f"created group [{group_id}] {printable(name)}")


async def _join_group(terminal: Terminal, group_id: int) -> None:
    await terminal.client.join_group(group_id)
    terminal.console.show(f"joined group [{group_id}]")


async def _leave_group(terminal: Terminal, group_id: int) -> None:
    await terminal.client.leave_group(group_id)
    terminal.console.show(f"left group [{group_id}]")


async def _group_chat(terminal: Terminal, group_id: int, text: str) -> None:
    await terminal.client.send_group_chat(group_id, text)


async def _logout(terminal: Terminal) -> Step:
    await terminal.flush_receipts()
    await terminal.client.logout()
    terminal.console.show("logged out")
    return Step.MENU


async def _quit(terminal: Terminal) -> Step:
    await terminal.flush_receipts()
    with suppress(ChatError, TimeoutError):
        await terminal.client.logout()
    return Step.QUIT


COMMANDS = {
    command.name: command
    for command in (
        Command("help", (), _help, "show the commands"),
        Command("chat", ("ID", "MESSAGE"), _chat, "send MESSAGE to user ID"),
        Command("addfriend", ("ID",), _add_friend, "ask user ID to be your friend"),
        Command("accept", ("ID",), _accept, "accept the friend request of user ID"),
        Command("decline", ("ID",), _decline, "decline the friend request of user ID"),
        Command("removefriend", ("ID",), _remove_friend, "stop being friends with user ID"),
        Command("creategroup", ("NAME", "DESC"), _create_group, "create a group", optional=1),
        Command("addgroup", ("GID",), _join_group, "join group GID"),
        Command("leavegroup", ("GID",), _leave_group, "leave group GID"),
        Command("groupchat", ("GID", "MESSAGE"), _group_chat, "send MESSAGE to group GID"),
        Command("loginout", (), _logout, "log out and go back to the menu"),
        Command("quit", (), _quit, "log out and leave"),
    )
}


def main(host: str, port: int) -> int:
    """Runs the terminal client against a server and returns the process exit code."""
    try:
        return anyio.run(_main, host, port)
    except KeyboardInterrupt:
        return 130


async def _main(host: str, port: int) -> int:
    connected = False
    try:
        async with connect(host, port) as client:
            connected = True
            if not sys.stdin.isatty():
                return await Terminal(client, PipeConsole.start()).run()
            with patch_stdout():
                return await Terminal(client, PromptConsole()).run()
    except OSError as error:  # includes TimeoutError
        if connected:
            raise
        print(f"cannot connect to {host}:{port}: {error}", file=sys.stderr)
        return 1
