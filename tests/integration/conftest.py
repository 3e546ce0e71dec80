"""Black-box harness for the integration tests: a real server process and a raw TCP client.

Everything here is written from /work/shared/PROTOCOL.md alone. The server is started as
`python -m chatserver serve ...` and spoken to over plain sockets; nothing from the chatserver
package is imported. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
FRAME_TIMEOUT = 5.0  # waiting for one frame
SLOW_TIMEOUT = 15.0  # LOGIN / REG replies: the password hash is deliberately slow
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SILENCE = 0.4  # how long "nothing arrives" is watched by default


# Replies, by request msgid, for the legacy dialect (which has no ACK_MSG and no seq habit).
_LEGACY_REPLY = {1: 2, 4: 5}
_REPLY_MSGIDS = (2, 5, 11)

Frame = dict[str, Any]
Pattern = Callable[[Frame], bool] | dict[str, Any]

# CHATSERVER_TEST_TRANSPORT picks what the suite runs against: serve's default TCP transport
# (unset), anyio or asyncio (serve --transport ...), or websocket (serve --ws-port, every
# client of the suite speaking over WebSocket at /ws instead of raw TCP).
TRANSPORT = os.environ.get("CHATSERVER_TEST_TRANSPORT", "default")
WEBSOCKET = TRANSPORT == "websocket"


class ProtocolViolation(AssertionError):
    """The server sent bytes that break the framing rules of PROTOCOL.md."""


# --------------------------------------------------------------------------- small helpers


def same(actual: Any, expected: Any) -> bool:
    """Equality without Python's bool/int/float mixing: `True` is not `1`, `1.0` is not `1`."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return type(actual) is type(expected) and actual == expected


def matches(frame: Frame, pattern: Pattern) -> bool:
    """A frame matches a dict pattern when every listed key is present with the same value."""
    if callable(pattern):
        return bool(pattern(frame))
    return all(k in frame and same(frame[k], v) for k, v in pattern.items())


def is_int(value: Any) -> bool:
    return type(value) is int


def device(chat, user, name, **extra):
    """A connection logged in as user on device name."""
    client = chat.client()
    client.login(user, device=name, **extra)
    return client


def positions(frames):
    return [f["pos"] for f in frames]


_name_counter = itertools.count(1)


def unique_name(prefix: str = "u") -> str:
    """A user or group name no other test uses (well under the 50-character limit)."""
    return f"{prefix[:16]}{next(_name_counter)}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- frame shapes
# Every frame the client reads is checked against the message table of PROTOCOL.md, so each
# test also checks the shape of everything the server happens to send it.

TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_STATES = ("online", "offline")
_ROLES = ("creator", "admin", "normal")


def _check_fields(obj: Any, spec: dict[str, Callable[[Any], bool]], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} is not an object: {obj!r}"]
    problems = []
    for key, ok in spec.items():
        if key not in obj:
            problems.append(f"{where} lacks {key!r}")
        elif not ok(obj[key]):
            problems.append(f"{where} has a bad {key!r}: {obj[key]!r}")
    return problems


def _pos_int(v: Any) -> bool:
    return is_int(v) and v > 0


def _str(v: Any) -> bool:
    return isinstance(v, str)


_PUSH_FIELDS: dict[int, dict[str, Callable[[Any], bool]]] = {
    6: {
        "id": _pos_int,
        "name": _str,
        "toid": _pos_int,
        "msg": _str,
        "time": lambda v: isinstance(v, str) and bool(TIME_FORMAT.match(v)),
        "ts": is_int,
        "msg_id": _pos_int,
    },
    10: {
        "groupid": _pos_int,
        "id": _pos_int,
        "name": _str,
        "msg": _str,
        "time": lambda v: isinstance(v, str) and bool(TIME_FORMAT.match(v)),
        "ts": is_int,
        "msg_id": _pos_int,
    },
    12: {"id": _pos_int, "name": _str},
    13: {"id": _pos_int, "name": _str, "accept": lambda v: type(v) is bool, "msg_id": _pos_int},
    14: {"id": _pos_int, "state": lambda v: v in _STATES},
    15: {"errmsg": lambda v: isinstance(v, str) and v != ""},
    22: {"pos": lambda v: is_int(v) and v >= 0},  # READ_MSG S->C (version 2, modern only)
    29: {  # GROUP_EVENT_MSG (version 2, modern only)
        "groupid": _pos_int,
        "event": lambda v: v in _GROUP_EVENTS,
        "userid": _pos_int,
        "by": _pos_int,
        "msg_id": _pos_int,
        "time": lambda v: isinstance(v, str) and bool(TIME_FORMAT.match(v)),
        "ts": is_int,
    },
    31: {"id": _pos_int},  # FRIEND_REMOVED_MSG (version 2, modern only)
}
_GROUP_EVENTS = (
    "joined", "left", "kicked", "role", "transfer", "muted", "updated", "dissolved"
)
# Objects with a msg_id carry their pos in the user's inbox (version 2), except in the legacy
# dialect, which keeps version 1's shape exactly.
_KEPT_MSGIDS = (6, 10, 13, 29)
_VERSION_2_PUSHES = (22, 29, 31)


def _pos_problems(obj: Frame, legacy: bool, where: str) -> list[str]:
    if obj.get("msgid") not in _KEPT_MSGIDS:
        return []
    if legacy:
        return [f"{where} carries 'pos' (legacy dialect)"] if "pos" in obj else []
    return [] if _pos_int(obj.get("pos")) else [f"{where} lacks a positive 'pos'"]


# What the original server sent: these fields and no others (PROTOCOL.md, legacy dialect (c)).
_LEGACY_CHAT_KEYS = {
    6: {"msgid", "id", "name", "toid", "msg", "time"},
    10: {"msgid", "groupid", "id", "name", "msg", "time"},
}


def _chat_problems(obj: dict[str, Any], legacy: bool, where: str) -> list[str]:
    msgid = obj["msgid"]
    if not legacy or msgid not in _LEGACY_CHAT_KEYS:
        return _check_fields(obj, _PUSH_FIELDS[msgid], where)
    keys = _LEGACY_CHAT_KEYS[msgid]
    spec = {k: v for k, v in _PUSH_FIELDS[msgid].items() if k in keys}
    problems = _check_fields(obj, spec, where)
    extra = sorted(set(obj) - keys)
    if extra:
        problems.append(f"{where} has fields the original never sent: {extra}")
    return problems


_FRIEND = {"id": _pos_int, "name": _str, "state": lambda v: v in _STATES}
_MEMBER = {
    "id": _pos_int,
    "name": _str,
    "state": lambda v: v in _STATES,
    "role": lambda v: v in _ROLES,
}
_GROUP = {
    "id": _pos_int,
    "groupname": _str,
    "groupdesc": _str,
    "users": lambda v: isinstance(v, list),
}
_REQUESTER = {"id": _pos_int, "name": _str}


def _decoded(item: Any, legacy: bool, where: str, problems: list[str]) -> Any:
    """Legacy lists hold JSON-encoded strings; modern ones hold the objects."""
    if not legacy:
        return item
    if not isinstance(item, str):
        problems.append(f"{where} is not a JSON string (legacy dialect): {item!r}")
        return None
    try:
        return json.loads(item)
    except ValueError:
        problems.append(f"{where} is not valid JSON: {item!r}")
        return None


def _login_ack_problems(frame: Frame, legacy: bool) -> list[str]:
    problems = _check_fields(frame, {"id": _pos_int, "name": _str}, "LOGIN_MSG_ACK")
    for key in ("last_pos", "read_pos"):
        if legacy and key in frame:
            problems.append(f"legacy LOGIN_MSG_ACK carries {key!r}")
        elif not legacy and not (is_int(frame.get(key)) and frame[key] >= 0):
            problems.append(f"LOGIN_MSG_ACK lacks a {key!r}")
    lists = ("friends", "groups", "offlinemsg") + (() if legacy else ("friend_requests",))
    for key in lists:
        if key not in frame:
            if not legacy:
                problems.append(f"LOGIN_MSG_ACK lacks {key!r}")
            continue
        if not isinstance(frame[key], list):
            problems.append(f"LOGIN_MSG_ACK {key!r} is not a list")
            continue
        if legacy and not frame[key]:
            problems.append(f"legacy LOGIN_MSG_ACK sends an empty {key!r} (should be left out)")
    if legacy and "friend_requests" in frame:
        problems.append("legacy LOGIN_MSG_ACK carries 'friend_requests'")
    for i, item in enumerate(frame.get("friends") or []):
        obj = _decoded(item, legacy, f"friends[{i}]", problems)
        if obj is not None:
            problems += _check_fields(obj, _FRIEND, f"friends[{i}]")
    for i, item in enumerate(frame.get("groups") or []):
        group = _decoded(item, legacy, f"groups[{i}]", problems)
        if group is None:
            continue
        problems += _check_fields(group, _GROUP, f"groups[{i}]")
        users = group.get("users") if isinstance(group, dict) else None
        if legacy and users == []:
            problems.append(f"legacy groups[{i}] sends an empty 'users' (should be left out)")
        for j, member in enumerate(users if isinstance(users, list) else []):
            obj = _decoded(member, legacy, f"groups[{i}].users[{j}]", problems)
            if obj is not None:
                problems += _check_fields(obj, _MEMBER, f"groups[{i}].users[{j}]")
    for i, item in enumerate(frame.get("offlinemsg") or []):
        obj = _decoded(item, legacy, f"offlinemsg[{i}]", problems)
        if obj is None:
            continue
        allowed = (6, 10) if legacy else (6, 10, 13, 29)
        if not isinstance(obj, dict) or obj.get("msgid") not in allowed:
            problems.append(f"offlinemsg[{i}] is not one of msgid {allowed}: {obj!r}")
            continue
        problems += _chat_problems(obj, legacy, f"offlinemsg[{i}]")
        problems += _pos_problems(obj, legacy, f"offlinemsg[{i}]")
    for i, item in enumerate(frame.get("friend_requests") or []):
        problems += _check_fields(item, _REQUESTER, f"friend_requests[{i}]")
    return problems


def frame_problems(frame: Any, *, legacy: bool = False) -> list[str]:
    """What is wrong with a server frame, per PROTOCOL.md's message table (empty: nothing)."""
    if not isinstance(frame, dict):
        return ["not a JSON object"]
    msgid = frame.get("msgid")
    if not is_int(msgid):
        return ["no integer msgid"]
    problems = []
    if "seq" in frame and not is_int(frame["seq"]):
        problems.append("a non-integer seq")
    if msgid in (2, 5, 11):
        if not is_int(frame.get("errno")):
            return [*problems, "a reply without an integer errno"]
        if frame["errno"] != 0:
            errmsg = frame.get("errmsg")
            if not isinstance(errmsg, str) or not errmsg:
                problems.append("a failed reply without an errmsg")
        if msgid == 11 and not is_int(frame.get("reply_to")):
            problems.append("an ACK_MSG without an integer reply_to")
        elif msgid == 5 and frame["errno"] == 0:
            problems += _check_fields(frame, {"id": _pos_int}, "REG_MSG_ACK")
        elif msgid == 2 and frame["errno"] == 0:
            problems += _login_ack_problems(frame, legacy)
    elif msgid in _PUSH_FIELDS and not (legacy and msgid in _VERSION_2_PUSHES):
        problems += _chat_problems(frame, legacy, f"msgid {msgid}")
        problems += _pos_problems(frame, legacy, f"msgid {msgid}")
    else:
        problems.append(f"msgid {msgid} is not something the server sends")
    return problems


# --------------------------------------------------------------------------- the raw client


@dataclass(frozen=True)
class User:
    id: int
    name: str
    password: str


class Client:
    """One raw TCP connection: JSON + terminator out, LF-split JSON frames in.

    Frames that arrive while the test waits for something else are kept, in order, in a backlog
    that later reads look at first.
    """

    _seqs = itertools.count(1)

    def __init__(self, port: int, *, legacy: bool = False, timeout: float = FRAME_TIMEOUT):
        self.port = port
        self.legacy = legacy
        self.terminator = b"\0" if legacy else b"\n"
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.backlog: deque[Frame] = deque()
        self.raw_frames: list[bytes] = []  # every server frame, terminator included
        self.eof = False
        self.user: User | None = None
        self.ack: Frame | None = None  # the last successful LOGIN_MSG_ACK

    # ---- sending
    def encode(self, obj: Any, *, ascii_only: bool = False) -> bytes:
        return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8")

    def send(self, obj: Any, *, terminator: bytes | None = None) -> None:
        end = self.terminator if terminator is None else terminator
        self.send_raw(self.encode(obj) + end)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_seq(self) -> int:
        return next(self._seqs)

    # ---- receiving
    def _read_frame(self, deadline: float) -> Frame | None:
        """The next frame off the socket, or None at the deadline. Raises at EOF."""
        while b"\n" not in self.buffer:
            if self.eof:
                if self.buffer:
                    raise ProtocolViolation(f"connection closed mid-frame: {self.buffer[:200]!r}")
                raise ConnectionError("connection closed by the server")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.raw_frames.append(line + b"\n")
        try:
            frame = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolViolation(f"server frame is not UTF-8 JSON: {line[:300]!r}") from exc
        if not isinstance(frame, dict):
            raise ProtocolViolation(f"server frame is not a JSON object: {line[:300]!r}")
        problems = frame_problems(frame, legacy=self.legacy)
        if problems:
            raise ProtocolViolation(f"{'; '.join(problems)} in server frame {line[:2000]!r}")
        return frame

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame (backlog first)."""
        if self.backlog:
            return self.backlog.popleft()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frame = self._read_frame(deadline)
        if frame is None:
            raise AssertionError(f"no frame within {timeout or self.timeout}s")
        return frame

    def expect(self, pattern: Pattern, timeout: float | None = None) -> Frame:
        """The first frame matching `pattern`; frames that don't match stay in the backlog."""
        for i, frame in enumerate(self.backlog):
            if matches(frame, pattern):
                del self.backlog[i]
                return frame
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped: list[Frame] = []
        try:
            while True:
                frame = self._read_frame(deadline)
                if frame is None:
                    raise AssertionError(
                        f"no frame matching {pattern!r} within "
                        f"{timeout or self.timeout}s; other frames: {skipped!r}"
                    )
                if matches(frame, pattern):
                    return frame
                skipped.append(frame)
        finally:
            self.backlog.extend(skipped)

    def expect_many(
        self, pattern: Pattern, count: int, timeout: float | None = None
    ) -> list[Frame]:
        return [self.expect(pattern, timeout) for _ in range(count)]

    def request(
        self, obj: Frame, timeout: float | None = None, *, terminator: bytes | None = None
    ) -> Frame:
        """Send a request and return its reply.

        Modern dialect: a fresh integer `seq` is added (unless the caller set one) and the reply is
        the LOGIN_MSG_ACK / REG_MSG_ACK / ACK_MSG echoing it. Legacy dialect: no seq is added (the
        original client sends none) and the reply is the next LOGIN_MSG_ACK or REG_MSG_ACK.
        """
        if timeout is None:
            timeout = SLOW_TIMEOUT if obj.get("msgid") in (1, 4) else self.timeout
        if self.legacy and "seq" not in obj:
            self.send(obj, terminator=terminator)
            return self.expect({"msgid": _LEGACY_REPLY[obj["msgid"]]}, timeout)
        obj = dict(obj)
        obj.setdefault("seq", self.next_seq())
        seq = obj["seq"]
        self.send(obj, terminator=terminator)
        return self.expect(
            lambda f: f.get("msgid") in _REPLY_MSGIDS and same(f.get("seq"), seq), timeout
        )

    def assert_silent(self, seconds: float = SILENCE, pattern: Pattern | None = None) -> None:
        """Nothing (or nothing matching `pattern`) is waiting or arrives within `seconds`."""

        def relevant(frame: Frame) -> bool:
            return pattern is None or matches(frame, pattern)

        waiting = [f for f in self.backlog if relevant(f)]
        assert not waiting, f"unexpected frames: {waiting!r}"
        deadline = time.monotonic() + seconds
        while True:
            try:
                frame = self._read_frame(deadline)
            except ConnectionError as exc:
                raise AssertionError("connection closed while it should stay open") from exc
            if frame is None:
                return
            assert not relevant(frame), f"unexpected frame: {frame!r}"
            self.backlog.append(frame)

    def drain(self, seconds: float = 0.2) -> list[Frame]:
        """Everything already received or arriving within `seconds`; the backlog is emptied."""
        frames = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + seconds
        while True:
            frame = self._read_frame(deadline)
            if frame is None:
                return frames
            frames.append(frame)

    def expect_closed(self, timeout: float | None = None) -> list[Frame]:
        """Wait until the server closes the connection; returns frames that came before EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frames: list[Frame] = []
        while True:
            try:
                frame = self._read_frame(deadline)
            except ConnectionError:
                self.backlog.extend(frames)
                return frames
            if frame is None:
                raise AssertionError(f"connection still open after the timeout; got {frames!r}")
            frames.append(frame)

    # ---- protocol conveniences
    def login(self, user: User, *, receipts: bool | None = None, **extra: Any) -> Frame:
        """LOGIN by id; asserts success and remembers the ack."""
        obj: Frame = {"msgid": 1, "id": user.id, "password": user.password, **extra}
        if receipts is not None:
            obj["receipts"] = receipts
        ack = self.request(obj)
        assert ack["msgid"] == 2 and same(ack["errno"], 0), ack
        self.user = user
        self.ack = ack
        return ack

    def logout(self) -> Frame:
        reply = self.request({"msgid": 3})
        assert reply["reply_to"] == 3 and same(reply["errno"], 0), reply
        self.user = None
        return reply

    def ok(self, obj: Frame) -> Frame:
        """A modern request that must succeed (errno 0); returns the ACK."""
        reply = self.request(obj)
        assert reply["msgid"] == 11, reply
        assert same(reply["reply_to"], obj["msgid"]), reply
        assert same(reply["errno"], 0), reply
        return reply

    def err(self, obj: Frame, errno: int, *, field: str | None = None) -> Frame:
        """A request that must fail with `errno`; with `field`, the errmsg must name it."""
        reply = self.request(obj)
        want = {1: 2, 4: 5}.get(obj.get("msgid"), 11)  # type: ignore[arg-type]
        assert reply["msgid"] == want, reply
        if want == 11:
            assert same(reply["reply_to"], obj["msgid"]), reply
        assert same(reply["errno"], errno), f"expected errno {errno}, got {reply!r}"
        if field is not None:
            assert re.search(rf"\b{re.escape(field)}\b", reply["errmsg"]), (
                f"errmsg does not name {field!r}: {reply!r}"
            )
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class WebSocketTestClient(Client):
    """The same client over WebSocket at /ws: each frame it sends is one text message (what
    send_raw is given is cut at its LF/NUL terminators, a trailing CR dropped, empty frames
    skipped, an unterminated tail kept for the next call, as a server's framing would), and
    each message received is one frame."""

    def __init__(self, port: int, *, timeout: float = FRAME_TIMEOUT):
        from websockets.sync.client import connect

        self.port = port
        self.legacy = False
        self.terminator = b"\n"
        self.timeout = timeout
        self.ws = connect(f"ws://{HOST}:{port}/ws", open_timeout=timeout, max_size=None,
                          close_timeout=1).__enter__()
        self.unsent = b""
        self.buffer = b""
        self.backlog: deque[Frame] = deque()
        self.raw_frames: list[bytes] = []
        self.eof = False
        self.user: User | None = None
        self.ack: Frame | None = None

    def send_raw(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        *frames, self.unsent = re.split(rb"[\n\0]", self.unsent + data)
        for frame in frames:
            frame = frame.removesuffix(b"\r")
            if frame:
                try:
                    self.ws.send(frame, text=True)
                except ConnectionClosed as exc:
                    raise BrokenPipeError("connection closed by the server") from exc

    def _read_frame(self, deadline: float) -> Frame | None:
        from websockets.exceptions import ConnectionClosed

        if self.eof:
            raise ConnectionError("connection closed by the server")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            message = self.ws.recv(timeout=remaining, decode=False)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            self.eof = True
            raise ConnectionError("connection closed by the server") from exc
        if b"\n" in message:
            raise ProtocolViolation(f"a WebSocket message holds more than a frame: {message!r}")
        self.raw_frames.append(message + b"\n")
        try:
            frame = json.loads(message.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolViolation(f"server frame is not UTF-8 JSON: {message[:300]!r}") from exc
        if not isinstance(frame, dict):
            raise ProtocolViolation(f"server frame is not a JSON object: {message[:300]!r}")
        problems = frame_problems(frame)
        if problems:
            raise ProtocolViolation(f"{'; '.join(problems)} in server frame {message[:2000]!r}")
        return frame

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


# --------------------------------------------------------------------------- the server process


class ServerProcess:
    """`python -m chatserver serve` on a free port, its output kept in a log file."""

    def __init__(self, database: str, log_path: Path, extra_args: Sequence[str] = ()):
        self.database = database
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.ws_port: int | None = None  # with CHATSERVER_TEST_TRANSPORT=websocket
        self.killed = False

    def start(self) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # No CHATSERVER_* settings leak in from the caller's shell: the defaults are under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        # Except one: the suite registers thousands of users from 127.0.0.1, which the limit of
        # accounts per address would refuse. test_abuse.py turns it on with the option (which
        # wins over the environment); cluster nodes inherit this.
        env["CHATSERVER_REGISTRATIONS_PER_MINUTE"] = env["CHATSERVER_REGISTRATIONS_PER_HOUR"] = "0"
        last_error = ""
        for _attempt in range(3):
            port = self.choose_port()
            with open(self.log_path, "ab") as log:
                log.write(f"---- starting on port {port}\n".encode())
                self.proc = subprocess.Popen(
                    self.command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            if self._wait_listening(port):
                self.port = port
                return self
            last_error = self.log_tail()
            self._terminate()
        raise RuntimeError(f"server did not start; log tail:\n{last_error}")

    def choose_port(self) -> int:
        """The port the next start listens on (a free one: start tries again if it was taken
        meanwhile)."""
        return free_port()

    def command(self, port: int) -> list[str]:
        command = [
            sys.executable, "-m", "chatserver", "serve", "--host", HOST, "--port", str(port),
            "--database", self.database, *self.extra_args,
        ]
        if TRANSPORT in ("anyio", "asyncio"):
            command += ["--transport", TRANSPORT]
        # CHATSERVER_TEST_LOOP=uvloop runs the server on uvloop (serve --loop).
        if os.environ.get("CHATSERVER_TEST_LOOP", "asyncio") != "asyncio":
            command += ["--loop", os.environ["CHATSERVER_TEST_LOOP"]]
        if WEBSOCKET and "--ws-port" not in self.extra_args:
            self.ws_port = free_port()
            command += ["--ws-port", str(self.ws_port)]
        return command

    def _wait_listening(self, port: int) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                if self.ws_port is not None:
                    socket.create_connection((HOST, self.ws_port), timeout=0.5).close()
                return self.proc.poll() is None
            except OSError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.killed = True
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        """SIGTERM, bounded wait, then SIGKILL."""
        self._terminate()
        if self.killed:
            warnings.warn(
                f"server on port {self.port} ignored SIGTERM for {STOP_TIMEOUT}s and was killed",
                stacklevel=2,
            )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def assert_no_traceback(self, since: int = 0) -> None:
        text = (
            self.log_path.read_bytes()[since:].decode("utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )
        assert "Traceback" not in text, f"the server logged a traceback:\n{text[-6000:]}"


class ClusterProcess(ServerProcess):
    """`chatserver cluster`: two nodes behind nginx on one port, sharing a database and a
    Redis bus. Clients are spread over the nodes, so most pairs of users are on different
    nodes: with CHATSERVER_TEST_CLUSTER=1 the whole suite runs against this."""

    def __init__(self, directory: Path, log_path: Path, nodes: int = 2, *, web: bool = False):
        super().__init__(f"sqlite:///{directory / 'cluster.db'}", log_path)
        self.nodes = nodes
        self.bus = f"redis://127.0.0.1:6379/0?namespace=test-{uuid.uuid4().hex[:8]}"
        self.web = web or WEBSOCKET
        self.node_port = 0

    def choose_port(self) -> int:
        """nginx's port, and with it every other port of the cluster, from one block of free
        ports: nginx's port, its web port (with web), then the nodes' TCP ports, then (with web)
        the nodes' web ports, which the cluster puts right after its nodes' TCP ports. Ports
        picked one by one may fall inside the block (none is held between the picks)."""
        web = 1 if self.web else 0
        first = free_port_block(1 + web + self.nodes * (1 + web))
        self.ws_port = first + 1 if web else None
        self.node_port = first + 1 + web
        return first

    def command(self, port: int) -> list[str]:
        if not self.node_port:
            self.choose_port()  # called on its own, not by start
        command = [
            sys.executable, "-m", "chatserver", "cluster", "--host", HOST, "--port", str(port),
            "--node-port", str(self.node_port),
            "--nodes", str(self.nodes), "--database", self.database, "--bus", self.bus,
        ]
        if self.ws_port is not None:
            command += ["--ws-port", str(self.ws_port)]
        return command


def free_port_block(count: int) -> int:
    """The first of count consecutive ports that are free now."""
    for _ in range(50):
        first = free_port()
        ports = range(first, first + count)
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind((HOST, port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


# --------------------------------------------------------------------------- the test harness


class Chat:
    """What a test needs against one server: connections, fresh users, common set-ups."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.clients: list[Client] = []

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def client(self, *, legacy: bool = False) -> Client:
        c: Client
        if WEBSOCKET:
            if legacy:
                pytest.skip("the legacy dialect is a TCP matter: WebSocket speaks the modern one")
            assert self.server.ws_port is not None
            c = WebSocketTestClient(self.server.ws_port)
        else:
            c = Client(self.port, legacy=legacy)
        self.clients.append(c)
        return c

    def register(self, name: str, password: str) -> int:
        c = self.client()
        try:
            reply = c.request({"msgid": 4, "name": name, "password": password})
        finally:
            c.close()
        assert reply["msgid"] == 5 and same(reply["errno"], 0), reply
        assert is_int(reply["id"]) and reply["id"] > 0, reply
        return int(reply["id"])

    def user(self, prefix: str = "u", password: str | None = None) -> User:
        name = unique_name(prefix)
        password = password if password is not None else f"pw-{uuid.uuid4().hex[:10]}"
        return User(self.register(name, password), name, password)

    def users(self, count: int, prefix: str = "u") -> list[User]:
        """Register `count` fresh users at once (one connection each, so hashing can overlap)."""
        wanted = [(unique_name(prefix), f"pw-{uuid.uuid4().hex[:10]}") for _ in range(count)]
        conns = [self.client() for _ in wanted]
        seqs = []
        for c, (name, password) in zip(conns, wanted, strict=True):
            seq = c.next_seq()
            seqs.append(seq)
            c.send({"msgid": 4, "name": name, "password": password, "seq": seq})
        result = []
        for c, seq, (name, password) in zip(conns, seqs, wanted, strict=True):
            reply = c.expect({"msgid": 5, "seq": seq}, SLOW_TIMEOUT)
            assert same(reply["errno"], 0), reply
            assert is_int(reply["id"]) and reply["id"] > 0, reply
            result.append(User(reply["id"], name, password))
            c.close()
        return result

    def online(self, user: User, *, receipts: bool | None = None, legacy: bool = False) -> Client:
        """A new connection logged in as `user` (its ack is in `.ack`)."""
        c = self.client(legacy=legacy)
        if legacy:
            ack = c.request({"msgid": 1, "id": user.id, "password": user.password})
            assert ack["msgid"] == 2 and same(ack["errno"], 0), ack
            c.user, c.ack = user, ack
        else:
            c.login(user, receipts=receipts)
        return c

    def online_all(self, *users: User, receipts: bool | None = None) -> list[Client]:
        """New connections logged in as `users`, the LOGINs sent at once so hashing can overlap.

        Only for users whose order of coming online does not matter to the test.
        """
        conns = [self.client() for _ in users]
        seqs = []
        for c, u in zip(conns, users, strict=True):
            seq = c.next_seq()
            seqs.append(seq)
            obj: Frame = {"msgid": 1, "id": u.id, "password": u.password, "seq": seq}
            if receipts is not None:
                obj["receipts"] = receipts
            c.send(obj)
        for c, u, seq in zip(conns, users, seqs, strict=True):
            ack = c.expect({"msgid": 2, "seq": seq}, SLOW_TIMEOUT)
            assert same(ack["errno"], 0), ack
            c.user, c.ack = u, ack
        return conns

    def befriend(self, ca: Client, cb: Client) -> None:
        """Make the users logged in on ca and cb friends (both online, modern dialect)."""
        a, b = ca.user, cb.user
        assert a is not None and b is not None
        ca.ok({"msgid": 7, "friendid": b.id})
        cb.expect({"msgid": 12, "id": a.id})
        cb.ok({"msgid": 13, "friendid": a.id, "accept": True})
        ca.expect({"msgid": 13, "id": b.id, "accept": True})
        # A friendship starts: each hears the other's state (Version 2, "Small gaps").
        ca.expect({"msgid": 14, "id": b.id, "state": "online"})
        cb.expect({"msgid": 14, "id": a.id, "state": "online"})

    def make_group(self, owner: Client, *members: Client, desc: str = "") -> tuple[int, str]:
        name = unique_name("g")
        ack = owner.ok({"msgid": 8, "groupname": name, "groupdesc": desc})
        gid = ack["groupid"]
        assert is_int(gid) and gid > 0, ack
        for m in members:
            m.ok({"msgid": 9, "groupid": gid})
        return gid, name

    def close_all(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


@contextlib.contextmanager
def chats_on(*servers: ServerProcess) -> Iterator[list[Chat]]:
    """A Chat on each started server; on the way out every client is closed, every server
    still running is stopped, and no log holds a traceback."""
    chats = [Chat(server) for server in servers]
    try:
        yield chats
    finally:
        for chat in chats:
            chat.close_all()
        for server in servers:
            if server.running:
                server.stop()
            server.assert_no_traceback()


class SqliteServerFactory:
    """Start, stop and restart servers that share one SQLite file."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.db_path = directory / "chat.db"
        self.url = f"sqlite:///{self.db_path}"  # absolute path: sqlite:////tmp/.../chat.db
        self.servers: list[ServerProcess] = []
        self.current: ServerProcess | None = None
        self.harnesses: list[Chat] = []

    def start(self) -> Chat:
        assert self.current is None or not self.current.running, "a server is already running"
        log = self.directory / f"server-{len(self.servers) + 1}.log"
        server = ServerProcess(self.url, log).start()
        self.servers.append(server)
        self.current = server
        chat = Chat(server)
        self.harnesses.append(chat)
        return chat

    def stop(self, *, kill: bool = False) -> None:
        """Stop the running server: SIGTERM (clean), or SIGKILL with `kill=True`."""
        if self.current is not None:
            if kill:
                self.current.kill()
            else:
                self.current.stop()

    def restart(self, *, kill: bool = False) -> Chat:
        self.stop(kill=kill)
        return self.start()

    def close(self) -> None:
        for chat in self.harnesses:
            chat.close_all()
        for server in self.servers:
            server.stop()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on memory:// for the whole run; tests keep apart by using fresh users.

    With CHATSERVER_TEST_CLUSTER=1 it is a two-node cluster behind nginx instead.
    """
    directory = tmp_path_factory.mktemp("server")
    log = directory / "server.log"
    if os.environ.get("CHATSERVER_TEST_CLUSTER"):
        proc: ServerProcess = ClusterProcess(directory, log).start()
    else:
        proc = ServerProcess("memory://", log).start()
    yield proc
    proc.stop()
    proc.assert_no_traceback()


@pytest.fixture
def chat(server: ServerProcess) -> Iterator[Chat]:
    """The harness on the shared server; fails the test if the server logged a traceback."""
    assert server.running, f"the shared server is not running; log tail:\n{server.log_tail()}"
    start = server.log_size()
    harness = Chat(server)
    yield harness
    harness.close_all()
    server.assert_no_traceback(since=start)


@pytest.fixture(scope="module")
def module_chat(server: ServerProcess) -> Iterator[Chat]:
    """A harness shared by one module's tests, for set-ups that those tests only read."""
    harness = Chat(server)
    yield harness
    harness.close_all()


@pytest.fixture
def sqlite_server_factory(tmp_path: Path) -> Iterator[SqliteServerFactory]:
    factory = SqliteServerFactory(tmp_path)
    yield factory
    factory.close()
    for s in factory.servers:
        s.assert_no_traceback()
