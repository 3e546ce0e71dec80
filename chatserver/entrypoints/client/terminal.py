"""The interactive terminal client: a login menu, then one-line commands such as ``chat:2:hi``.

Pushes from the server print as they arrive. On a terminal, prompt_toolkit keeps them from
garbling the line being typed; when stdin is a pipe or a file, lines are read and printed plainly.
When the connection is lost, the client reconnects by itself, logs in again, as the web page
does, and syncs from the last inbox position it has, showing only what it has not shown; each
command says only what the server did.
"""

from __future__ import annotations

import codecs
import os
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from enum import Enum, auto
from typing import Protocol

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from attrs import frozen
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from chatserver.entrypoints.client.library import (
    DEFAULT_DEVICE,
    DEFAULT_REQUEST_TIMEOUT,
    Attachment,
    ChatClient,
    ChatError,
    ConnectionLost,
    Delivery,
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRemoved,
    FriendRequest,
    GroupEvent,
    GroupMessage,
    HistoryPage,
    Kicked,
    LoginResult,
    Presence,
    TLSHandshakeError,
    connect,
    pos_of,
)

HEARTBEAT_INTERVAL = 20.0
RECEIPT_DELAY = 0.2  # gathers the receipts of messages that arrive together into one request
BACKOFF_FIRST = 0.5  # seconds before the first attempt to reconnect, doubling up to BACKOFF_MAX
BACKOFF_MAX = 10.0
RETRY_LATER = frozenset({9, 11})  # errnos of a login again that may succeed later: rate, busy
MENU = "==========\n1. login\n2. register\n3. quit\n=========="
RULE = "=" * 50
CONNECTION_LOST = "connection lost, reconnecting..."
HISTORY_PAGE = 20  # messages per history:ID page, a screenful
SYNC_PAGE = 200  # messages per SYNC while catching up after a reconnect
MAX_DEVICE = 64  # characters in a device name (PROTOCOL.md)
TRUNCATED = "some messages from while you were away are no longer kept"
MUTE_MINUTES = 60  # mute:GID:ID without MINUTES
ROLES = ("admin", "normal")  # what role:GID:ID:ROLE may set (the creator changes by transfer)
# GROUP_EVENTs after which this user is no longer in the group, when the user is ``userid``
# (dissolved: whoever it names).
GROUP_ENDS = frozenset({"kicked", "left"})


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
    optional: int = 0  # how many trailing params may be left out (they become "" or None)

    @property
    def usage(self) -> str:
        split = len(self.params) - self.optional
        required = ":".join((self.name, *self.params[:split]))
        return required + "".join(f"[:{param}]" for param in self.params[split:])


def _is_number(param: str) -> bool:
    return param.endswith("ID") or param in ("POS", "MINUTES")


def parse_command(line: str) -> tuple[Command, list[int | str | None]]:
    """Splits a typed line into its command and arguments, or raises BadInput with a hint.

    Params named ``*ID`` or ``POS`` are numbers; one left out (if optional) is None."""
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
    args: list[int | str | None] = []
    for index, (param, text) in enumerate(zip(params, texts, strict=True)):
        if not text and index >= required:
            args.append(None if _is_number(param) else "")
        elif _is_number(param):
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


def describe(event: Event, names: dict[int, str], me: int | None = None) -> str | None:
    """The line that shows an event, or None for what is not worth showing; messages whose
    sender is ``me`` (sent from another device, or found in the history) say "you"."""
    match event:
        case DirectMessage(sender_id=sender_id) if sender_id == me:
            to = labelled(event.recipient_id, names.get(event.recipient_id, ""))
            return f"{event.time} you -> {to}: {printable(event.text)}{_file_note(event)}"
        case DirectMessage():
            sender = f"[{event.sender_id}] {printable(event.sender_name)}"
            return f"{event.time} {sender} said: {printable(event.text)}{_file_note(event)}"
        case GroupMessage(sender_id=sender_id) if sender_id == me:
            text = printable(event.text) + _file_note(event)
            return f"group[{event.group_id}] {event.time} you said: {text}"
        case GroupMessage():
            sender = f"[{event.sender_id}] {printable(event.sender_name)}"
            text = printable(event.text) + _file_note(event)
            return f"group[{event.group_id}] {event.time} {sender} said: {text}"
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
        case FriendRemoved():
            name = names.get(event.user_id)
            who = f"[{event.user_id}] {printable(name)}" if name else f"[{event.user_id}]"
            return f"{who} is no longer your friend"
        case Kicked():
            return f"logged out: {printable(event.reason) or 'your account logged in elsewhere'}"
        case GroupEvent():
            return _describe_group_event(event, me)
    return None


def _file_note(message: DirectMessage | GroupMessage) -> str:
    """What a message's file looks like on screen, with the command that fetches it."""
    attached = message.file
    if attached is None:
        return ""
    return (f" [file {printable(attached.name)}, {attached.size:,} bytes: "
            f"download:{message.msg_id}]")


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[#####---------------]  25%  1,024/4,096 bytes``"""
    share = done / total if total else 1.0
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share:4.0%}  {done:,}/{total:,} bytes"


def _describe_group_event(event: GroupEvent, me: int | None = None) -> str:
    group = f"group[{event.group_id}]"
    if event.user_id == me and event.by != me:  # what another member did to this user
        if event.event == "kicked":
            return f"{group} you were removed from the group by [{event.by}]"
        if event.event == "muted" and event.until:
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(event.until / 1000))
            return f"{group} you are muted until {until} (by [{event.by}])"
        if event.event == "muted":
            return f"{group} you may chat again (unmuted by [{event.by}])"
    details = [
        f"{name} {printable(str(value))}"
        for name, value in (
            ("role", event.role),
            ("until", event.until),
            ("name", event.group_name),
            ("description", event.group_description),
        )
        if value is not None
    ]
    extra = f" ({', '.join(details)})" if details else ""
    return f"group[{event.group_id}] {event.event}: [{event.user_id}] by [{event.by}]{extra}"


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
    if login.blocked:
        lines.append(f"blocked: {' '.join(f'[{user}]' for user in login.blocked)}")
    if login.friend_requests:
        lines.append("friend requests:")
        for request in login.friend_requests:
            who = request.requester_id
            name = printable(request.requester_name)
            lines.append(f"  [{who}] {name}: accept:{who} or decline:{who}")
    names = {friend.id: friend.name for friend in login.friends}
    shown = [
        line for line in (describe(m, names, login.user_id) for m in login.offline_messages) if line
    ]
    if shown:
        lines.append("messages while you were away:")
        lines.extend(f"  {line}" for line in shown)
    lines.append(RULE)
    return "\n".join(lines)


def _msg_id(event: Event) -> int | None:
    return event.msg_id if isinstance(event, Delivery) else None


def labelled(number: int, name: str) -> str:
    """``[7] alice``, or ``[7]`` when the name is not known."""
    return f"[{number}] {printable(name)}" if name else f"[{number}]"


def backoff_delays(
    first: float = BACKOFF_FIRST,
    maximum: float = BACKOFF_MAX,
    jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),
) -> Iterator[float]:
    """The waits before each attempt to reconnect: ``first``, doubling, never over ``maximum``.

    The jitter keeps the clients of a restarted server from all coming back in the same instant.
    """
    delay = first
    while True:
        yield min(maximum, delay * jitter())
        delay = min(maximum, delay * 2)


class CannotConnect(Exception):
    """The server could not be reached when the terminal started."""


def _why(failure: OSError) -> str:
    """Why the first connection failed, in one line, with what to do about a TLS handshake."""
    if not isinstance(failure, TLSHandshakeError):
        return str(failure)
    if failure.untrusted:
        return (f"TLS: {failure.reason}; trust it with --tls-ca FILE (the server's certificate "
                "or its CA)")
    return f"TLS: {failure.reason}; leave out --tls and --tls-ca if it serves plain TCP"


class NotConnected(Exception):
    """A command needs the server while the terminal is reconnecting."""


class Terminal:
    """One run of the terminal client, from the menu to quit, over as many connections as it
    takes: when the connection is lost it reconnects by itself and logs in again."""

    def __init__(
        self,
        host: str,
        port: int,
        console: Console,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        device: str = DEFAULT_DEVICE,
        web_port: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.tls = tls  # None: plain TCP
        self.device = device
        self.port = port
        self.console = console
        self.heartbeat_interval = heartbeat_interval
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self.client: ChatClient | None = None  # None while disconnected or logging in again
        self.credentials: tuple[int, str] | None = None  # (user id, password) while logged in
        self.user_id: int | None = None
        self.user_name = ""
        # The inbox position up to which this session has every message (None: the server
        # keeps no inbox), and the positions it has past a gap: a reconnect syncs from pos.
        self.pos: int | None = None
        self.later: set[int] = set()
        self.catch_up_to: int | None = None  # set by a login again, done by _serve
        # What the server has told this session, so that each command can say what it did.
        self.friends: dict[int, str] = {}  # id -> name: at login, then answers and presence
        self.requests: dict[int, str] = {}  # friend requests waiting for this user's answer
        self.groups: dict[int, str] = {}  # id -> name of the groups this user is in
        self.seen: set[int] = set()  # msg_ids shown since login: redeliveries are not shown twice
        self.unreceipted: list[int] = []
        self.receipts_due = anyio.Event()
        self.screen = anyio.Lock()  # keeps the login block ahead of the pushes that follow it
        self.session_scope: CancelScope | None = None
        # Files in the messages shown, by msg_id, for download:MSGID; the web port they come
        # from (None: the server's own --port + 1 is not guessed, files are off).
        self.attachments: dict[int, Attachment] = {}
        self.web_port = web_port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connected_client(self) -> ChatClient:
        """The connection a command uses; raises NotConnected while there is none."""
        if self.client is None:
            raise NotConnected
        return self.client

    async def run(self) -> None:
        """Runs the menu until the user quits; raises CannotConnect if the server is not there."""
        async with anyio.create_task_group() as task_group:
            failure = await task_group.start(self._stay_connected)
            if failure is None:
                task_group.start_soon(self._send_receipts)
                await self._menu()
            task_group.cancel_scope.cancel()
        if failure is not None:
            raise CannotConnect(f"cannot connect to {self.address}: {_why(failure)}") from failure

    async def _stay_connected(
        self, *, task_status: TaskStatus[OSError | None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keeps a connection to the server, reconnecting with backoff whenever it is lost."""
        delays = backoff_delays(self.backoff_first, self.backoff_max)
        started = announced = False
        while True:
            try:
                async with connect(
                    self.host, self.port, request_timeout=self.request_timeout,
                    web_port=self.web_port, tls=self.tls or False,
                ) as client:
                    if started:
                        await self._connected_again(client)
                    else:
                        started = True
                        self.client = client
                        task_status.started(None)
                    delays = backoff_delays(self.backoff_first, self.backoff_max)
                    announced = False
                    await self._serve(client)
            except OSError as error:  # ConnectionLost and TimeoutError too
                if not started:
                    task_status.started(error)
                    return
            except ChatError:
                pass  # logging in again must wait (rate limited, server busy): try again later
            finally:
                self.client = None
            self.unreceipted = []  # the server keeps them, and delivers them again at login
            if not announced:
                announced = True
                self.console.show(CONNECTION_LOST)
            await anyio.sleep(next(delays))

    async def _connected_again(self, client: ChatClient) -> None:
        """Logs in again, with the same credentials, if the lost connection was logged in."""
        if self.credentials is None:
            await client.ping()  # a server that hangs up at once has not come back
            self.client = client
            self.console.show(f"reconnected to {self.address}")
            return
        user_id, password = self.credentials
        async with self.screen:
            try:
                login = await client.login(user_id, password, device=self.device)
            except ChatError as error:
                if error.errno in RETRY_LATER:
                    raise
                self.client = client
                reason = printable(error.errmsg) or f"errno {error.errno}"
                self.console.show(
                    f"reconnected to {self.address}, but logging in again failed: {reason}"
                )
                self._end_session()
                return
            self.client = client
            self._resume(login)

    async def _serve(self, client: ChatClient) -> None:
        """Shows what the server pushes, and pings it, until the connection is lost."""
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._heartbeat, client, task_group.cancel_scope)
            if self.catch_up_to is not None:
                # Beside reading the pushes: a SYNC reply waits behind every unread push.
                task_group.start_soon(self._catch_up, client, self.catch_up_to)
                self.catch_up_to = None
            async for event in client.events():
                async with self.screen:
                    self._show(event)
            task_group.cancel_scope.cancel()

    async def _heartbeat(self, client: ChatClient, connection_scope: CancelScope) -> None:
        # Also before login: the server closes a connection that stays silent for 30 s then.
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                await client.ping()
            except TimeoutError:
                connection_scope.cancel()  # the server stopped answering: reconnect
                return
            except (ChatError, ConnectionLost):
                pass  # a lost connection ends the events, and _serve with them

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
                self.console.show(MENU)
            elif choice.strip():
                self.console.show("invalid choice: type 1 to log in, 2 to register, 3 to quit")

    async def _register(self) -> None:
        if self.client is None:
            self.console.show(self._not_connected("register"))
            return
        name = await self.console.read_line("username: ")
        password = await self.console.read_line("password: ", secret=True)
        if name is None or password is None:
            return  # the input has ended: the menu quits
        if not name.strip() or not password:
            self.console.show("a name and a password are needed")
            return
        with self._errors_shown("register failed"):
            user_id = await self.connected_client().register(name.strip(), password)
            self.console.show(f"registered: your user id is {user_id}")

    async def _login(self) -> Step:
        if self.client is None:
            self.console.show(self._not_connected("login"))
            return Step.MENU
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
                client = self.connected_client()
                user = int(who) if who.isdigit() else who
                login = await client.login(user, password, device=self.device)
                self._begin(login, password)
        if login is None:
            return Step.MENU
        return await self._session()

    def _know(self, login: LoginResult) -> None:
        self.user_id = login.user_id
        self.user_name = login.name
        self.friends = {friend.id: friend.name for friend in login.friends}
        self.requests = {r.requester_id: r.requester_name for r in login.friend_requests}
        self.groups = {group.id: group.name for group in login.groups}

    def _begin(self, login: LoginResult, password: str) -> None:
        self.credentials = (login.user_id, password)
        self._know(login)
        self.seen = set()
        self.unreceipted = []
        # What came before this login is history (history:ID); what waited is shown now.
        self.pos, self.later, self.catch_up_to = login.last_pos, set(), None
        self.console.show(describe_login(login))
        for delivery in login.offline_messages:
            self._shown(_msg_id(delivery))

    def _resume(self, login: LoginResult) -> None:
        """After logging in again: one line, then only what this session has not shown yet."""
        known_requests = self.requests
        self._know(login)
        self.console.show(f"reconnected to {self.address} and logged in again")
        for request in login.friend_requests:
            if request.requester_id not in known_requests:
                self._show(request)
        last_pos = login.last_pos
        if last_pos is not None and (self.pos is None or last_pos < self.pos):
            # A server that had no inbox, or lost it (a memory:// server restarted): start
            # from where it is now.
            self.pos, self.later = last_pos, set()
        if last_pos is None or self.pos is None or self.pos >= last_pos:
            for delivery in login.offline_messages:
                self._show(delivery)
            return
        self.catch_up_to = last_pos
        first = min((pos_of(m) or 0 for m in login.offline_messages), default=0)
        if first and first <= self.pos + 1:
            for delivery in login.offline_messages:
                self._show(delivery)
        # Else what waited is the newest part only (the server's stored limit): the catch-up
        # shows it with what came before it, in order. Until shown, it is not receipted.

    async def _catch_up(self, client: ChatClient, target: int) -> None:
        """SYNCs from the last pos this session has until ``target`` (the login's last_pos),
        showing only what it has not shown; what comes after ``target`` arrives live."""
        user_id = self.user_id
        with suppress(ChatError, TimeoutError, ConnectionLost):  # the next reconnect retries
            since = self.pos or 0
            told = False
            while since < target:
                page = await client.sync(since, SYNC_PAGE)
                if self.credentials is None or self.user_id != user_id:
                    return  # logged out (or kicked) meanwhile: these are no longer to show
                async with self.screen:
                    if page.truncated and not told:
                        told = True
                        self.console.show(TRUNCATED)
                    for message in page.messages:
                        self._show(message)
                newest = max((pos_of(m) or 0 for m in page.messages), default=0)
                if newest <= since:
                    break
                since = newest
            self._have_up_to(target)

    async def _session(self) -> Step:
        try:
            with CancelScope() as self.session_scope:
                return await self._commands()
            return Step.MENU  # a kick ended the session, or logging in again failed
        finally:
            self.session_scope = None

    def _end_session(self) -> None:
        self.credentials = None
        if self.session_scope is not None:
            self.session_scope.cancel()

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

    def _not_connected(self, what: str) -> str:
        return f"{what}: not connected (reconnecting to {self.address}), nothing was sent"

    @contextmanager
    def _errors_shown(self, what: str) -> Iterator[None]:
        try:
            yield
        except BadInput as hint:  # a value the command line could not check by its shape
            self.console.show(str(hint))
        except ChatError as error:
            self.console.show(f"{what}: {printable(error.errmsg) or f'errno {error.errno}'}")
        except TimeoutError:
            self.console.show(f"{what}: the server did not answer in time")
        except ConnectionLost:
            self.console.show(f"{what}: the connection was lost before the server answered")
        except NotConnected:
            self.console.show(self._not_connected(what))
        except OSError as error:  # a file that could not be read or written
            if isinstance(error, ConnectionError):
                raise  # the chat connection itself: the terminal reconnects
            self.console.show(f"{what}: {error.strerror or error}")

    def _show(self, event: Event) -> None:
        self._learn(event)
        msg_id = _msg_id(event)
        line = describe(event, self.friends, self.user_id)
        if line and msg_id not in self.seen:
            self.console.show(line)
        self._shown(msg_id)
        self._has(pos_of(event))
        if isinstance(event, Kicked):
            self.unreceipted = []  # the server logged this session out: it keeps them for later
            self._end_session()

    def _learn(self, event: Event) -> None:
        match event:
            case DirectMessage(file=Attachment()) | GroupMessage(file=Attachment()):
                assert event.file is not None
                self.attachments[event.msg_id] = event.file
            case FriendAnswer(accepted=True):
                self.friends[event.responder_id] = event.responder_name
            case FriendRequest():
                self.requests[event.requester_id] = event.requester_name
            case Presence():
                self.friends.setdefault(event.user_id, "")  # only friends' presence is sent
            case FriendRemoved():
                self.friends.pop(event.user_id, None)
            case GroupEvent(event="dissolved"):
                self.groups.pop(event.group_id, None)
            case GroupEvent() if event.event in GROUP_ENDS and event.user_id == self.user_id:
                self.groups.pop(event.group_id, None)
            case GroupEvent(event="updated", group_name=str(name)) if event.group_id in self.groups:
                self.groups[event.group_id] = name

    def _has(self, pos: int | None) -> None:
        """Counts ``pos`` as had: pos advances over every position had without a gap."""
        if not pos or self.pos is None or pos <= self.pos:
            return
        self.later.add(pos)
        self._advance(self.pos)

    def _have_up_to(self, pos: int) -> None:
        """Everything up to ``pos`` is had (a catch-up reached it)."""
        if self.pos is not None and pos > self.pos:
            self.later = {later for later in self.later if later > pos}
            self._advance(pos)

    def _advance(self, pos: int) -> None:
        while pos + 1 in self.later:
            pos += 1
            self.later.remove(pos)
        self.pos = pos

    def sent(self, msg_id: int, pos: int | None) -> None:
        """This session's own message: never shown again when a sync brings it back."""
        self.seen.add(msg_id)
        self._has(pos)

    def show_page(self, page: HistoryPage, what: str, older: str, before: int | None) -> None:
        """Shows one page of history, oldest first, and the command for the older page."""
        lines = [describe(m, self.friends, self.user_id) for m in page.messages]
        for message in page.messages:  # its download:MSGID works as the live one's does
            if isinstance(message, DirectMessage | GroupMessage) and message.file is not None:
                self.attachments[message.msg_id] = message.file
        shown = [f"  {line}" for line in lines if line]
        if shown:
            self.console.show("\n".join([f"messages {what}:", *shown]))
        if page.more and page.first_pos is not None:
            # Also when nothing on this page could be shown (only events of a newer server).
            self.console.show(f"older messages: {older}:{page.first_pos}")
        elif not shown:
            self.console.show(f"no {'older ' if before else ''}messages {what}")

    def befriend(self, user_id: int, name: str) -> None:
        self.friends[user_id] = name
        self.console.show(f"{labelled(user_id, name)} is now your friend")

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
        if msg_ids and self.client is not None:
            # Failing is harmless: the server delivers them again at the next login.
            with suppress(ChatError, TimeoutError, ConnectionLost):
                await self.client.receipt(msg_ids)


async def _help(terminal: Terminal) -> None:
    width = max(len(command.usage) for command in COMMANDS.values())
    for command in COMMANDS.values():
        terminal.console.show(f"{command.usage:<{width}}  {command.about}")


async def _chat(terminal: Terminal, to_id: int, text: str) -> None:
    sent = await terminal.connected_client().send_chat(to_id, text)
    terminal.sent(sent.msg_id, sent.pos)


class _Progress:
    """Shows a transfer's progress bar every tenth of the way (a line each: the console may
    be a pipe)."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = 10 * done // total if total else 10
        if step > self.shown:
            self.shown = step
            self.terminal.console.show(progress_bar(done, total))


def _local(path: str) -> str:
    """A path as typed, ~ expanded (no I/O)."""
    return os.path.expanduser(path)


def _needs_web_port(terminal: Terminal, command: str) -> None:
    if terminal.web_port is None:
        raise BadInput(f"{command}: files go over the server's web port: start the client "
                       "with --web-port PORT (the server's --ws-port)")


async def _file_to_send(terminal: Terminal, command: str, path: str) -> str:
    """The local file to upload; BadInput, before anything is asked of the server, when there
    is none (a missing path, a folder) or no web port to send it through."""
    _needs_web_port(terminal, command)
    local = _local(path)
    try:
        if not await anyio.Path(local).is_file():
            what = "a folder" if await anyio.Path(local).is_dir() else "no file"
            raise BadInput(f"{command}: {path} is {what}: give the path of a file")
    except OSError as error:
        raise BadInput(f"{command}: cannot read {path}: {error.strerror or error}") from None
    return local


async def _send_file(terminal: Terminal, to_id: int, path: str) -> None:
    local = await _file_to_send(terminal, "sendfile", path)
    sent = await terminal.connected_client().send_file(
        local, to_id=to_id, progress=_Progress(terminal)
    )
    terminal.sent(sent.msg_id, sent.pos)


async def _send_group_file(terminal: Terminal, group_id: int, path: str) -> None:
    local = await _file_to_send(terminal, "gsendfile", path)
    sent = await terminal.connected_client().send_file(
        local, group_id=group_id, progress=_Progress(terminal)
    )
    terminal.sent(sent.msg_id, sent.pos)


async def _download(terminal: Terminal, msg_id: int, directory: str) -> None:
    attached = terminal.attachments.get(msg_id)
    if attached is None:
        terminal.console.show(f"message {msg_id} has no file this terminal has shown")
        return
    _needs_web_port(terminal, "download")
    saved = await terminal.connected_client().download(
        attached, _local(directory or "."), progress=_Progress(terminal)
    )
    terminal.console.show(f"saved {saved} ({attached.size:,} bytes, sha256 checked)")


async def _add_friend(terminal: Terminal, friend_id: int) -> None:
    already = terminal.friends.get(friend_id)
    they_asked = terminal.requests.get(friend_id)
    await terminal.connected_client().add_friend(friend_id)
    if already is not None:  # the server answers a request to a friend with errno 0, no change
        terminal.console.show(f"{labelled(friend_id, already)} is already your friend")
    elif they_asked is not None:  # a request to whoever asked first accepts theirs
        del terminal.requests[friend_id]
        terminal.befriend(friend_id, they_asked)
    else:
        terminal.console.show(f"friend request sent to [{friend_id}]")


async def _accept(terminal: Terminal, friend_id: int) -> None:
    await terminal.connected_client().answer_friend(friend_id, True)
    terminal.befriend(friend_id, terminal.requests.pop(friend_id, ""))


async def _decline(terminal: Terminal, friend_id: int) -> None:
    await terminal.connected_client().answer_friend(friend_id, False)
    asker = labelled(friend_id, terminal.requests.pop(friend_id, ""))
    terminal.console.show(f"declined the friend request of {asker}")


async def _remove_friend(terminal: Terminal, friend_id: int) -> None:
    await terminal.connected_client().remove_friend(friend_id)
    name = terminal.friends.pop(friend_id, None)
    if name is None:  # errno 0 from the server, with nothing to remove
        terminal.console.show(f"[{friend_id}] was not your friend")
    else:
        terminal.console.show(f"{labelled(friend_id, name)} is no longer your friend")


async def _create_group(terminal: Terminal, name: str, description: str) -> None:
    group_id = await terminal.connected_client().create_group(name, description)
    terminal.groups[group_id] = name
    terminal.console.show(f"created group {labelled(group_id, name)}")


async def _join_group(terminal: Terminal, group_id: int) -> None:
    already = terminal.groups.get(group_id)
    await terminal.connected_client().join_group(group_id)
    if already is not None:  # joining twice is errno 0, and changes nothing
        terminal.console.show(f"you are already in group {labelled(group_id, already)}")
    else:
        terminal.groups[group_id] = ""
        terminal.console.show(f"joined group [{group_id}]")


async def _leave_group(terminal: Terminal, group_id: int) -> None:
    await terminal.connected_client().leave_group(group_id)
    terminal.console.show(f"left group {labelled(group_id, terminal.groups.pop(group_id, ''))}")


async def _group_chat(terminal: Terminal, group_id: int, text: str) -> None:
    sent = await terminal.connected_client().send_group_chat(group_id, text)
    terminal.sent(sent.msg_id, sent.pos)


async def _history(terminal: Terminal, user_id: int, before: int | None) -> None:
    client = terminal.connected_client()
    page = await client.history(with_user=user_id, before=before, limit=HISTORY_PAGE)
    who = labelled(user_id, terminal.friends.get(user_id, ""))
    terminal.show_page(page, f"with {who}", f"history:{user_id}", before)


async def _group_history(terminal: Terminal, group_id: int, before: int | None) -> None:
    client = terminal.connected_client()
    page = await client.history(group_id=group_id, before=before, limit=HISTORY_PAGE)
    group = labelled(group_id, terminal.groups.get(group_id, ""))
    terminal.show_page(page, f"in group {group}", f"ghistory:{group_id}", before)


def _group(terminal: Terminal, group_id: int) -> str:
    return f"group {labelled(group_id, terminal.groups.get(group_id, ''))}"


async def _kick(terminal: Terminal, group_id: int, user_id: int) -> None:
    await terminal.connected_client().kick(group_id, user_id)
    terminal.console.show(f"removed [{user_id}] from {_group(terminal, group_id)}")


async def _mute(terminal: Terminal, group_id: int, user_id: int, minutes: int | None) -> None:
    minutes = MUTE_MINUTES if minutes is None else minutes
    if minutes <= 0:
        raise BadInput("usage: mute:GID:ID[:MINUTES] (MINUTES above 0; unmute:GID:ID unmutes)")
    until_ms = int(time.time() * 1000) + minutes * 60_000
    await terminal.connected_client().mute(group_id, user_id, until_ms)
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(until_ms / 1000))
    terminal.console.show(f"muted [{user_id}] in {_group(terminal, group_id)} until {until}")


async def _unmute(terminal: Terminal, group_id: int, user_id: int) -> None:
    await terminal.connected_client().unmute(group_id, user_id)
    terminal.console.show(f"unmuted [{user_id}] in {_group(terminal, group_id)}")


async def _role(terminal: Terminal, group_id: int, user_id: int, role: str) -> None:
    role = role.strip().lower()
    if role not in ROLES:
        raise BadInput("usage: role:GID:ID:ROLE (ROLE is admin or normal)")
    await terminal.connected_client().set_role(group_id, user_id, role)
    terminal.console.show(f"[{user_id}] is now {role} in {_group(terminal, group_id)}")


async def _transfer(terminal: Terminal, group_id: int, user_id: int) -> None:
    await terminal.connected_client().transfer_group(group_id, user_id)
    terminal.console.show(
        f"[{user_id}] is now the creator of {_group(terminal, group_id)}; you are an admin"
    )


async def _dissolve(terminal: Terminal, group_id: int) -> None:
    group = _group(terminal, group_id)
    answer = await terminal.console.read_line(f"dissolve {group} for every member? (yes/no) ")
    if (answer or "").strip().lower() != "yes":
        terminal.console.show(f"{group} stays")
        return
    await terminal.connected_client().dissolve_group(group_id)
    terminal.groups.pop(group_id, None)
    terminal.console.show(f"dissolved {group}")


async def _rename_group(terminal: Terminal, group_id: int, name: str) -> None:
    await terminal.connected_client().update_group(group_id, name=name)
    terminal.groups[group_id] = name
    terminal.console.show(f"group [{group_id}] is now called {printable(name)}")


async def _describe_group(terminal: Terminal, group_id: int, description: str) -> None:
    await terminal.connected_client().update_group(group_id, description=description)
    terminal.console.show(f"changed the description of {_group(terminal, group_id)}")


async def _block(terminal: Terminal, user_id: int) -> None:
    await terminal.connected_client().block(user_id)
    name = terminal.friends.pop(user_id, None) or terminal.requests.pop(user_id, None) or ""
    terminal.console.show(f"blocked {labelled(user_id, name)}")


async def _unblock(terminal: Terminal, user_id: int) -> None:
    await terminal.connected_client().unblock(user_id)
    terminal.console.show(f"unblocked [{user_id}]")


async def _password(terminal: Terminal) -> None:
    console = terminal.console
    password = await console.read_line("current password: ", secret=True)
    new_password = await console.read_line("new password: ", secret=True)
    if not password or not new_password:
        console.show("password: not changed (a password must not be empty)")
        return
    await terminal.connected_client().change_password(password, new_password)
    if terminal.credentials is not None:  # a login again after a drop uses the new one
        terminal.credentials = (terminal.credentials[0], new_password)
    console.show("password changed; your other devices were logged out")


async def _delete_account(terminal: Terminal) -> Step | None:
    console = terminal.console
    console.show("this deletes your account, friends, groups and messages for good")
    password = await console.read_line("type your password to confirm: ", secret=True)
    if not password:
        console.show("deleteaccount: nothing was deleted")
        return None
    await terminal.connected_client().delete_account(password)
    terminal.credentials = None  # the server has logged this session out
    terminal.unreceipted = []
    console.show("your account was deleted")
    return Step.MENU


async def _logout(terminal: Terminal) -> Step:
    client = terminal.connected_client()
    await terminal.flush_receipts()
    await client.logout()
    terminal.credentials = None
    terminal.console.show("logged out")
    return Step.MENU


async def _quit(terminal: Terminal) -> Step:
    await terminal.flush_receipts()
    if terminal.client is not None:
        with suppress(ChatError, TimeoutError, ConnectionLost):
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
        Command("sendfile", ("ID", "PATH"), _send_file, "send the file at PATH to user ID"),
        Command("gsendfile", ("GID", "PATH"), _send_group_file,
                "send the file at PATH to group GID"),
        Command("download", ("MSGID", "DIR"), _download,
                "save the file of message MSGID (into DIR, default here)", optional=1),
        Command(
            "history",
            ("ID", "POS"),
            _history,
            "the latest messages with user ID (or before POS)",
            optional=1,
        ),
        Command(
            "ghistory",
            ("GID", "POS"),
            _group_history,
            "the latest messages in group GID (or before POS)",
            optional=1,
        ),
        Command("kick", ("GID", "ID"), _kick, "remove member ID from group GID (creator, admin)"),
        Command(
            "mute",
            ("GID", "ID", "MINUTES"),
            _mute,
            f"keep member ID from chatting in GID for MINUTES (default {MUTE_MINUTES})",
            optional=1,
        ),
        Command("unmute", ("GID", "ID"), _unmute, "let member ID chat in group GID again"),
        Command(
            "role",
            ("GID", "ID", "ROLE"),
            _role,
            "make member ID admin or normal in group GID (creator)",
        ),
        Command(
            "transfer",
            ("GID", "ID"),
            _transfer,
            "make member ID the creator of group GID; you become an admin",
        ),
        Command("dissolve", ("GID",), _dissolve, "end group GID for every member (creator)"),
        Command("renamegroup", ("GID", "NAME"), _rename_group, "rename group GID"),
        Command(
            "groupdesc",
            ("GID", "DESC"),
            _describe_group,
            "change (or, without DESC, clear) the description of group GID",
            optional=1,
        ),
        Command("block", ("ID",), _block, "block user ID: no chats or requests from them"),
        Command("unblock", ("ID",), _unblock, "unblock user ID"),
        Command("password", (), _password, "change your password (asks for both)"),
        Command(
            "deleteaccount",
            (),
            _delete_account,
            "delete your account for good (asks for the password)",
        ),
        Command("loginout", (), _logout, "log out and go back to the menu"),
        Command("quit", (), _quit, "log out and leave"),
    )
}


def default_device() -> str:
    """This machine's host name, which the terminal logs in with unless told a device."""
    return socket.gethostname()[:MAX_DEVICE] or DEFAULT_DEVICE


def main(
    host: str, port: int, device: str | None = None, web_port: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Runs the terminal client against a server and returns the process exit code; ``tls``
    (None: plain TCP) checks the server's certificate."""
    try:
        return anyio.run(_main, host, port, device or default_device(), web_port, tls)
    except KeyboardInterrupt:
        return 130


async def _main(
    host: str, port: int, device: str, web_port: int | None, tls: ssl.SSLContext | None
) -> int:
    try:
        if not sys.stdin.isatty():
            await Terminal(host, port, PipeConsole.start(), device=device,
                           web_port=web_port, tls=tls).run()
        else:
            with patch_stdout():
                await Terminal(host, port, PromptConsole(), device=device,
                               web_port=web_port, tls=tls).run()
    except CannotConnect as error:
        print(error, file=sys.stderr)
        return 1
    return 0
