"""A live fuzz run against a real `chatserver serve` process.

Twenty workers open connection after connection and throw about 5,000 frames at the server:
random bytes, valid frames of every msgid of PROTOCOL.md and mutations of them (fields dropped,
wrong types, huge and unparsable numbers, deep nesting, NULs, invalid UTF-8, truncation, flipped
bytes), NUL-terminated legacy frames, frames over the size limit, all written in pieces cut at
random points. Some workers log in as real users first, so the authenticated paths get fuzzed
too. The rate limits and the frame limit close connections now and then: the worker opens a new
one and goes on, and the figures count what happened.

Afterwards the server must still run, two fresh users must be able to register, log in and
chat, and the server log must hold no traceback. Every frame the server sent must be a JSON
object ended by LF (and, on connections whose dialect is known, of the shape PROTOCOL.md gives).

The run is seeded (CHATSERVER_FUZZ_SEED) and bounded: FUZZ_SECONDS of fuzzing at most.
The fuzzing connects from 127.0.0.2 and up, so the per-address login throttle it trips cannot
refuse the final check, which connects from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, User, frame_problems, same

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CHATSERVER_FUZZ_SEED", "20261126"))
DATABASE = os.environ.get("CHATSERVER_FUZZ_DATABASE", "memory://")
WORKERS = 20
AUTH_WORKERS = 10  # the first workers log in as real users on each connection they open
TOTAL_FRAMES = 5000  # fuzz frames; the few flooding connections send their PINGs on top
FLOOD_CONNECTIONS = 3  # connections that flood PINGs until the server cuts them off
FUZZ_SECONDS = 18.0
FRAME_LIMIT = 65536
SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]
READ_LIMIT = 32 * 1024 * 1024  # a LOGIN_MSG_ACK may carry 200 messages of 4,096 characters
BARRIER_SEQ = 9_007_199_254_740_000  # seqs of the PING that ends each connection

Frame = dict[str, Any]

# --------------------------------------------------------------------------- frame material

WEIRD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
    1.5, -0.0, 1e308, 3.0, "", "1", "abc", "\u0000", "😀", "中文", "\ud800", [], [1], [[]],
    [None], ["1"], {}, {"id": 1}, {"msgid": 1},
]
NUMBER_TEXTS = [
    "1e400", "-1e400", "1e308", "NaN", "Infinity", "-Infinity", "1.0", "1e2", "-0", "0.0",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808",
    "-9223372036854775809", "9223372036854775807", "9223372036854775808", "1" + "0" * 400,
    "-" + "9" * 5000, "0x1F", "01", "+1", ".5", "1.", "1e", "true", "null", '"7"', "[6]",
]
BAD_UTF8 = [
    b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
    b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xc3",
]
INSERTS = [
    b"\x00", b"\n", b"\r", b"\r\n", b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"\xff",
    b"\xef\xbb\xbf", b" ", b"\t", b"\\u0000", b"\\ud800", b'"msgid":', b"null",
]
TEXT_PIECES = [
    "hello", "hi", " ", "'", '"', "\\", "\\n", "\n", "\r", "\t", "\u0000", "中文", "你好",
    "😀", "👩‍👩‍👧", "\u2028", "\u202e", "<script>", "'; DROP TABLE users; --", "%s", "{}",
    "\x7f", "é", "\ufeff",
]
# msgids the server never takes as requests (its own replies and pushes, and unknown ones).
STRANGE_MSGIDS = [0, 2, 5, 11, 12, 14, 15, 20, 99, -1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)]
REQUEST_MSGIDS = [1, 3, 4, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19]
# LOGIN and REG each cost a deliberately slow password hash: they are kept rare.
MSGID_WEIGHTS = {1: 0.25, 4: 0.2}


@dataclass
class Target:
    """What the frames may name: real users (with passwords) and real groups."""

    users: list[User]
    victims: list[User]  # users whose correct password fuzzed LOGINs may use
    groups: list[int]


class FrameMaker:
    """Makes one fuzz frame at a time from a seeded random generator."""

    def __init__(self, rng: random.Random, target: Target) -> None:
        self.rng = rng
        self.target = target
        self.seen_msg_ids: list[int] = []

    # ---- pieces
    def text(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.03:
            return ""
        if roll < 0.05:
            return "x" * r.choice([4096, 4097, 5000])
        return "".join(r.choice(TEXT_PIECES) for _ in range(r.randint(1, 8)))

    def user_id(self) -> int:
        r = self.rng
        roll = r.random()
        if roll < 0.75:
            return r.choice(self.target.users).id
        if roll < 0.9:
            return r.randint(1, 200)
        return r.choice([0, -1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)])

    def group_id(self) -> int:
        r = self.rng
        if r.random() < 0.8:
            return r.choice(self.target.groups)
        return r.choice([0, -5, r.randint(1, 1000), 2**63 - 1, 2**64 - 1])

    def weird(self) -> Any:
        r = self.rng
        roll = r.random()
        if roll < 0.8:
            return r.choice(WEIRD_VALUES)
        if roll < 0.9:
            return "y" * r.choice([51, 129, 201, 4097, 20000])
        depth = r.choice([5, 50, 400])
        value: Any = 1
        for _ in range(depth):
            value = [value] if r.random() < 0.5 else {"a": value}
        return value

    def valid(self, msgid: int | None = None) -> Frame:
        """A well-formed request (or a server-side message sent the wrong way)."""
        r = self.rng
        if msgid is None:
            if r.random() < 0.1:
                msgid = r.choice(STRANGE_MSGIDS)
            else:
                weights = [MSGID_WEIGHTS.get(m, 1.0) for m in REQUEST_MSGIDS]
                msgid = r.choices(REQUEST_MSGIDS, weights)[0]
        obj: Frame
        if msgid == 1:
            if r.random() < 0.5:
                victim = r.choice(self.target.victims)
                password = victim.password if r.random() < 0.7 else victim.password + "x"
                who: Frame = {"id": victim.id} if r.random() < 0.7 else {"name": victim.name}
            else:
                who, password = {"id": self.user_id()}, "wrong"
            obj = {"msgid": 1, **who, "password": password}
            if r.random() < 0.7:
                obj["receipts"] = r.random() < 0.5
        elif msgid == 3:
            obj = {"msgid": 3}
        elif msgid == 4:
            obj = {"msgid": 4, "name": f"fz{r.getrandbits(48):x}{r.choice(TEXT_PIECES)}",
                   "password": self.text() or "p"}
        elif msgid == 6:
            obj = {"msgid": 6, "toid": self.user_id(), "msg": self.text()}
        elif msgid in (7, 18):
            obj = {"msgid": msgid, "friendid": self.user_id()}
        elif msgid == 8:
            obj = {"msgid": 8, "groupname": f"fg{r.getrandbits(40):x}{r.choice(TEXT_PIECES)}"}
            if r.random() < 0.7:
                obj["groupdesc"] = self.text()
        elif msgid in (9, 17):
            obj = {"msgid": msgid, "groupid": self.group_id()}
        elif msgid == 10:
            obj = {"msgid": 10, "groupid": self.group_id(), "msg": self.text()}
        elif msgid == 13:
            obj = {"msgid": 13, "friendid": self.user_id(), "accept": r.random() < 0.5}
        elif msgid == 16:
            obj = {"msgid": 16}
        elif msgid == 19:
            if self.seen_msg_ids and r.random() < 0.6:
                ids = r.sample(self.seen_msg_ids, min(len(self.seen_msg_ids), r.randint(1, 20)))
            else:
                ids = [r.randint(-5, 10**6) for _ in range(r.randint(0, 30))]
            obj = {"msgid": 19, "msg_ids": ids}
        else:
            obj = {"msgid": msgid, "errno": 0, "id": self.user_id(), "msg": self.text()}
        if r.random() < 0.5:
            obj["seq"] = r.randint(0, 2**31)
        if r.random() < 0.1:
            obj["id" if msgid not in (1, 4) else "extra"] = self.user_id()
        return obj

    def mutated(self) -> Frame:
        """A valid frame with fields dropped, retyped or added."""
        r = self.rng
        obj = self.valid()
        for _ in range(r.randint(1, 3)):
            keys = list(obj)
            roll = r.random()
            if roll < 0.3 and keys:
                del obj[r.choice(keys)]
            elif roll < 0.75 and keys:
                obj[r.choice(keys)] = self.weird()
            elif roll < 0.85:
                name = r.choice(["zzz", "msg_id", "errno", "toid", "\u0000", "", "seq"])
                obj[name] = self.weird()
            else:
                obj["msgid"] = r.choice([*STRANGE_MSGIDS, *REQUEST_MSGIDS])
        return obj

    def serialize(self, obj: Any) -> bytes:
        r = self.rng
        text = json.dumps(
            obj,
            ensure_ascii=r.random() < 0.5,
            separators=(",", ":") if r.random() < 0.8 else (", ", ": "),
        )
        # A lone surrogate (ensure_ascii off) comes out as CESU-8 bytes: invalid UTF-8.
        return text.encode("utf-8", errors="surrogatepass")

    def byte_mutated(self) -> bytes:
        r = self.rng
        data = bytearray(self.serialize(self.valid()))
        for _ in range(r.randint(1, 3)):
            if not data:
                data += r.randbytes(r.randint(1, 10))
            roll = r.random()
            i = r.randrange(len(data))
            if roll < 0.25:
                del data[i:]  # truncated
            elif roll < 0.45:
                for _ in range(r.randint(1, 4)):
                    data[r.randrange(len(data))] = r.randrange(256)
            elif roll < 0.65:
                data[i:i] = r.choice(INSERTS) if r.random() < 0.7 else r.randbytes(r.randint(1, 8))
            elif roll < 0.75:
                del data[i : i + r.randint(1, 10)]
            elif roll < 0.85:
                data[i:i] = data[i : i + r.randint(1, 20)]
            elif roll < 0.92:
                data += r.choice([b"}", b"]", b",", b" x", b'{"msgid":16}', b"\xff"])
            else:
                data[:0] = r.choice([b"\xef\xbb\xbf", b"  ", b"\t", b"\r", b"\xff"])
        return bytes(data)

    def numbers(self) -> bytes:
        """A valid frame with one numeric field replaced by a raw number text."""
        r = self.rng
        obj = self.valid()
        keys = [k for k, v in obj.items() if isinstance(v, int) and not isinstance(v, bool)]
        key = r.choice(keys) if keys and r.random() < 0.9 else "msgid"
        obj[key] = "__NUMBER__"
        return self.serialize(obj).replace(b'"__NUMBER__"', r.choice(NUMBER_TEXTS).encode())

    def deep(self) -> bytes:
        r = self.rng
        depth = r.choice([10, 100, 1000, 1024, 1025, 5000, 12000])
        if r.random() < 0.5:
            nested = b"[" * depth + b"1" + b"]" * depth
        else:
            nested = b'{"a":' * depth + b"1" + b"}" * depth
        if r.random() < 0.2:
            nested = nested[: r.randrange(1, len(nested))]  # unbalanced
        where = r.random()
        if where < 0.3:
            return nested
        field_name = r.choice(["msgid", "msg", "toid", "seq", "msg_ids", "zzz", "groupid"])
        obj = self.valid()
        obj[field_name] = "__DEEP__"
        return self.serialize(obj).replace(b'"__DEEP__"', nested)

    def strings(self) -> bytes:
        """NULs, invalid UTF-8 and escapes in strings, keys and values."""
        r = self.rng
        obj = self.valid(r.choice([1, 4, 6, 8, 10, 6, 10, 16]))
        obj["__S__"] = 0
        bad = r.choice(BAD_UTF8)
        kind = r.random()
        if kind < 0.35:
            piece = b'"msg":"a' + bad + b'b"'
        elif kind < 0.5:
            piece = b'"' + bad + b'":1'
        elif kind < 0.65:
            piece = b'"msg":"a\x00b"'  # a raw NUL: the frame ends there
        elif kind < 0.8:
            piece = b'"name":"x\\u0000y","msg":"\\u0000"'
        elif kind < 0.9:
            piece = b'"msg":"\\ud800\\udfff\\udc00\\ud83d"'
        else:
            piece = b'"msg":"\\x41\\q\\u12"'
        return self.serialize(obj).replace(b'"__S__":0', piece)

    def garbage(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.4:
            return r.randbytes(r.randint(1, 300))
        if roll < 0.7:
            tokens = [b"{", b"}", b"[", b"]", b'"msgid"', b":", b",", b"1", b'"x"', b"null",
                      b"true", b" ", b"-", b"e", b"."]
            return b"".join(r.choice(tokens) for _ in range(r.randint(1, 60)))
        if roll < 0.85:
            return r.choice([b"null", b"1", b"[]", b'"msgid"', b"[{\"msgid\":16}]", b"true",
                             b"1e400", b'{"msgid":16}{"msgid":16}', b"{}", b'{"seq":5}',
                             b'{"seq":5,"msgid":"6"}', b'{"msgid":6.0}', b'{"msgid":true}'])
        return bytes(r.randrange(32, 127) for _ in range(r.randint(1, 200)))

    def big(self) -> bytes:
        """Large frames under the limit, and frames right at it."""
        r = self.rng
        head = b'{"msgid":6,"toid":1,"msg":"'
        size = r.choice([4096, 4097, 60000, FRAME_LIMIT])
        return head + b"z" * (size - len(head) - 2) + b'"}'

    def oversize(self) -> bytes:
        r = self.rng
        if r.random() < 0.5:
            head = b'{"msgid":6,"toid":1,"msg":"'
            return head + b"z" * (FRAME_LIMIT + r.randint(-len(head) - 1, 3000)) + b'"}'
        return r.randbytes(FRAME_LIMIT + r.randint(1, 3000)).replace(b"\n", b"n").replace(
            b"\0", b"0"
        )

    KINDS: tuple[tuple[str, float], ...] = (
        ("valid", 15), ("mutated", 28), ("bytes", 20), ("numbers", 6), ("deep", 3),
        ("strings", 8), ("garbage", 12), ("big", 1), ("empty", 2), ("oversize", 0.15),
    )

    def make(self) -> tuple[str, bytes]:
        """One frame's kind and its bytes (without the terminator)."""
        r = self.rng
        kind = r.choices([k for k, _ in self.KINDS], [w for _, w in self.KINDS])[0]
        if kind == "valid":
            return kind, self.serialize(self.valid())
        if kind == "mutated":
            return kind, self.serialize(self.mutated())
        if kind == "empty":
            return kind, r.choice([b"", b"\r", b" ", b"\t", b"\r\r"])
        return kind, getattr(self, {"bytes": "byte_mutated"}.get(kind, kind))()


def longest_frame(payload: bytes) -> int:
    """The longest frame the server cuts from `payload` (followed by a terminator)."""
    return max(len(piece) - piece.endswith(b"\r") for piece in re.split(rb"[\n\0]", payload))


# --------------------------------------------------------------------------- the figures


@dataclass
class Stats:
    frames: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    connections: Counter[str] = field(default_factory=Counter)
    logins: Counter[int] = field(default_factory=Counter)  # errno of the worker's own LOGINs
    replies: Counter[int] = field(default_factory=Counter)  # errno of every reply
    pushes: Counter[int] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
    oversize_sent: int = 0
    violations: list[str] = field(default_factory=list)
    other_closures: list[str] = field(default_factory=list)
    barrier_waits: list[float] = field(default_factory=list)
    floods: Counter[str] = field(default_factory=Counter)

    def report(self, seconds: float) -> str:
        def counts(c: Counter[Any]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"

        return "\n".join([
            f"live fuzz, seed {SEED}, {seconds:.1f} s against {DATABASE}",
            f"  frames sent: {self.frames} ({self.bytes / 1e6:.2f} MB); by kind: "
            f"{counts(self.kinds)}",
            f"  connections opened: {sum(self.connections.values())} "
            f"({counts(self.connections)})",
            f"  workers' own logins by errno: {counts(self.logins)}",
            f"  replies by errno: {counts(self.replies)} (total {sum(self.replies.values())})",
            f"  pushes by msgid: {counts(self.pushes)}",
            f"  connections closed by the server: {sum(self.closed_by_server.values())} "
            f"({counts(self.closed_by_server)}); frames over the limit sent: "
            f"{self.oversize_sent}",
            f"  flooding connections (one write of 520-620 PINGs): {counts(self.floods)}",
            f"  slowest reply to a connection's closing PING: "
            f"{max(self.barrier_waits, default=0):.2f} s",
            f"  protocol violations: {len(self.violations)}",
        ])


# --------------------------------------------------------------------------- one connection


class FuzzConnection:
    """A raw connection: the worker writes, a reader task counts every frame that comes back."""

    def __init__(self, port: int, source: str, mode: str, rng: random.Random, stats: Stats,
                 maker: FrameMaker) -> None:
        self.port = port
        self.source = source
        self.mode = mode  # modern, legacy, chaos (dialect unknown), flood
        self.rng = rng
        self.stats = stats
        self.maker = maker
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.read_task: asyncio.Task[None] | None = None
        self.closing = False  # we are ending it ourselves
        self.eof = asyncio.Event()
        self.last_errno: int | None = None
        self.refused_in_a_row = 0
        self.sent_oversize = False
        self.last_sent: deque[tuple[str, int]] = deque(maxlen=4)  # (kind, bytes)
        self.last_payloads: deque[bytes] = deque(maxlen=3)
        self.waiting: dict[int, asyncio.Future[Frame]] = {}  # seq -> reply

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port, local_addr=(self.source, 0),
                                    limit=READ_LIMIT),
            5,
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.connections[self.mode] += 1
        self.read_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.reader is not None
        legacy = self.mode == "legacy"
        try:
            while True:
                try:
                    line = await self.reader.readline()
                except (ConnectionError, OSError):
                    return
                except ValueError:  # longer than READ_LIMIT
                    self.stats.violations.append("a server frame over 32 MiB")
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):
                    self.stats.violations.append(f"closed mid-frame: {line[:200]!r}")
                    return
                self._count(line[:-1], legacy)
        finally:
            if not self.closing:
                if self.last_errno == 8 or self.sent_oversize:
                    reason = "frame too large"
                elif self.refused_in_a_row >= 100:
                    reason = "flooding"
                else:
                    reason = f"other ({self.mode})"
                    self.stats.other_closures.append(
                        f"{self.mode} connection, last frames sent: {list(self.last_sent)}")
                self.stats.closed_by_server[reason] += 1
            self.eof.set()
            for future in self.waiting.values():
                if not future.done():
                    future.cancel()

    def _count(self, line: bytes, legacy: bool) -> None:
        try:
            frame = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.stats.violations.append(f"server frame is not UTF-8 JSON: {line[:300]!r}")
            return
        if not isinstance(frame, dict) or type(frame.get("msgid")) is not int:
            self.stats.violations.append(f"server frame without an integer msgid: {line[:300]!r}")
            return
        if self.mode != "chaos":  # a chaos connection's dialect is whatever its garbage made it
            problems = frame_problems(frame, legacy=legacy)
            if problems:
                self.stats.violations.append(f"{'; '.join(problems)}: {line[:500]!r}")
        msgid = frame["msgid"]
        if msgid in (2, 5, 11):
            errno = frame.get("errno")
            self.stats.replies[errno] += 1
            self.last_errno = errno
            self.refused_in_a_row = self.refused_in_a_row + 1 if errno == 9 else 0
            seq = frame.get("seq")
            future = self.waiting.get(seq) if type(seq) is int else None
            if future is not None and not future.done():
                future.set_result(frame)
        else:
            self.stats.pushes[msgid] += 1
            if type(frame.get("msg_id")) is int:
                self.maker.seen_msg_ids.append(frame["msg_id"])
                del self.maker.seen_msg_ids[:-200]

    async def send(self, data: bytes) -> bool:
        """Write `data` in pieces cut at random points; False once the connection is gone."""
        assert self.writer is not None
        r = self.rng
        pos = 0
        try:
            while pos < len(data):
                if self.eof.is_set():
                    return False
                roll = r.random()
                size = r.randint(1, 16) if roll < 0.3 else (
                    len(data) if roll > 0.8 else r.randint(17, 8192))
                self.writer.write(data[pos : pos + size])
                pos += size
                await asyncio.wait_for(self.writer.drain(), 5)
                if r.random() < 0.15:
                    await asyncio.sleep(0.001)
        except (ConnectionError, OSError, TimeoutError):
            return False
        return True

    async def request(self, obj: Frame, terminator: bytes, wait: float) -> Frame | None:
        """Send one clean frame with a fresh seq and wait for its reply (None if none came)."""
        seq = obj["seq"]
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = future
        try:
            if not await self.send(json.dumps(obj).encode() + terminator):
                return None
            return await asyncio.wait_for(future, wait)
        except (TimeoutError, asyncio.CancelledError):
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return None
        finally:
            self.waiting.pop(seq, None)

    async def close(self) -> None:
        self.closing = not self.eof.is_set()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2)
        if self.read_task is not None:
            self.read_task.cancel()
            with contextlib.suppress(BaseException):
                await self.read_task


# --------------------------------------------------------------------------- the workers


class Fuzz:
    def __init__(self, port: int, target: Target, seed: int) -> None:
        self.port = port
        self.target = target
        self.seed = seed
        self.stats = Stats()
        self.deadline = 0.0
        self.barriers = iter(range(BARRIER_SEQ, BARRIER_SEQ + 10**6))

    def remaining_frames(self) -> int:
        return TOTAL_FRAMES - (self.stats.frames - self.stats.kinds["flood"])

    async def run(self) -> None:
        self.deadline = time.monotonic() + FUZZ_SECONDS
        await asyncio.gather(*(self.worker(i) for i in range(WORKERS)))

    async def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        maker = FrameMaker(rng, self.target)
        user = self.target.users[index] if index < AUTH_WORKERS else None
        opened = 0
        while self.remaining_frames() > 0 and time.monotonic() < self.deadline:
            roll = rng.random()
            mode = ("legacy" if roll < 0.17 else "chaos" if roll < 0.35 and user is None
                    else "modern")
            opened += 1
            if index >= WORKERS - FLOOD_CONNECTIONS and opened == 2:
                mode = "flood"  # once, from the last few workers
            conn = FuzzConnection(self.port, rng.choice(SOURCES), mode, rng, self.stats, maker)
            try:
                await conn.open()
            except (OSError, TimeoutError) as exc:
                self.stats.violations.append(f"could not connect: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            try:
                await self.session(conn, rng, maker, user)
            finally:
                await conn.close()

    async def session(self, conn: FuzzConnection, rng: random.Random, maker: FrameMaker,
                      user: User | None) -> None:
        terminator = b"\0" if conn.mode == "legacy" else b"\n"
        if conn.mode == "flood":
            count = rng.randint(520, 620)
            self.stats.frames += count
            self.stats.kinds["flood"] += count
            data = b'{"msgid":16}\n' * count
            self.stats.bytes += len(data)
            await conn.send(data)
            # Cut off only if the server refused 200 in a row, i.e. handled them faster than
            # its budget refills (100/s): not guaranteed on a busy machine, so only counted.
            cut_off = await self.wait_closed(conn, 2)
            self.stats.floods["cut off" if cut_off else "not cut off"] += 1
            return
        if user is not None:  # log in first (the first frame also fixes the dialect)
            obj = {"msgid": 1, "id": user.id, "password": user.password,
                   "receipts": rng.random() < 0.6, "seq": next(self.barriers)}
            ack = await conn.request(obj, terminator, 15)
            self.stats.logins[ack.get("errno") if ack else "no reply"] += 1
        elif conn.mode != "chaos":
            ping = b'{"msgid":16}' + terminator  # fixes the dialect; legacy gets no reply
            await conn.send(ping)
        count = min(self.remaining_frames(), rng.randint(5, 80))
        sent = 0
        while sent < count and time.monotonic() < self.deadline and not conn.eof.is_set():
            burst = []
            oversize = False
            for _ in range(min(count - sent, rng.randint(1, 20))):
                kind, payload = maker.make()
                self.stats.kinds[kind] += 1
                end = terminator
                if rng.random() < 0.1:
                    end = rng.choice([b"\r\n", b"\0", b"\n", b"\n\n", b"\0\n"])
                burst.append(payload + end)
                conn.last_sent.append((kind, len(payload)))
                conn.last_payloads.append(payload + end)
                sent += 1
                if longest_frame(payload) > FRAME_LIMIT:
                    self.stats.oversize_sent += 1
                    conn.sent_oversize = oversize = True
                    break
            data = b"".join(burst)
            self.stats.frames += len(burst)
            self.stats.bytes += len(data)
            if not await conn.send(data):
                break
            if oversize:
                # PROTOCOL.md: an oversize frame closes the connection.
                if not await self.wait_closed(conn, 15):
                    self.stats.violations.append(
                        f"connection still open 15 s after a {len(burst[-1])}-byte frame")
                return
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() * 0.01)
        if conn.eof.is_set():
            return
        # A PING after a fresh LF: its reply means everything before it was handled.
        barrier = {"msgid": 16, "seq": next(self.barriers)}
        if conn.mode == "modern" or (user is not None and conn.mode != "legacy"):
            await conn.send(b"\n")
            t0 = time.monotonic()
            # LOGIN and REG queue for the deliberately slow password hash: allow for that.
            got = await conn.request(barrier, b"\n", 15)
            self.stats.barrier_waits.append(time.monotonic() - t0)
            if got is None and not conn.eof.is_set():
                self.stats.violations.append(
                    f"no reply to the closing PING ({conn.mode}); last frames sent: "
                    f"{[p[:150] + (b'...' if len(p) > 150 else b'') for p in conn.last_payloads]}")
        else:
            await conn.send(b"\n" + json.dumps(barrier).encode() + b"\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.eof.wait(), 0.3)

    async def wait_closed(self, conn: FuzzConnection, seconds: float) -> bool:
        try:
            await asyncio.wait_for(conn.eof.wait(), seconds)
        except TimeoutError:
            return False
        return True


# --------------------------------------------------------------------------- the test


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(DATABASE, tmp_path / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


def _set_up(chat: Chat) -> Target:
    users = chat.users(AUTH_WORKERS + 4, "fz")
    owner, *members = chat.online_all(*users[:4])
    groups = [chat.make_group(owner, *members)[0] for _ in range(2)]
    chat.close_all()
    return Target(users=users, victims=users[AUTH_WORKERS:], groups=groups)


def _still_serves(chat: Chat) -> None:
    """Two fresh users register, log in, and chat both ways with receipts."""
    alice, bob = chat.users(2, "after")
    ca, cb = chat.online_all(alice, bob, receipts=True)
    for sender, receiver, user_from, text in (
        (ca, cb, alice, "still there? 😀"),
        (cb, ca, bob, "yes, \"still\" here\\ 中文"),
    ):
        ack = sender.ok({"msgid": 6, "toid": receiver.user.id, "msg": text})
        got = receiver.expect({"msgid": 6, "msg_id": ack["msg_id"]})
        assert got["msg"] == text and same(got["id"], user_from.id), got
        receiver.ok({"msgid": 19, "msg_ids": [ack["msg_id"]]})
    gid, _ = chat.make_group(ca, cb)
    ack = cb.ok({"msgid": 10, "groupid": gid, "msg": "group hello"})
    ca.expect({"msgid": 10, "groupid": gid, "msg_id": ack["msg_id"]})
    ca.logout()
    cb.ok({"msgid": 16})
    chat.close_all()


def test_live_fuzz_leaves_the_server_serving(fuzz_server: ServerProcess) -> None:
    chat = Chat(fuzz_server)
    target = _set_up(chat)
    assert fuzz_server.port is not None
    fuzz = Fuzz(fuzz_server.port, target, SEED)
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(fuzz.run(), FUZZ_SECONDS + 30))
    elapsed = time.monotonic() - started
    print()
    print(fuzz.stats.report(elapsed))
    for closure in fuzz.stats.other_closures[:10]:
        print("  closed for another reason:", closure)
    for violation in fuzz.stats.violations[:20]:
        print("  violation:", violation)

    assert fuzz_server.running, f"the server died; log tail:\n{fuzz_server.log_tail()}"
    _still_serves(chat)
    assert fuzz_server.running
    fuzz_server.assert_no_traceback()
    assert not fuzz.stats.violations, fuzz.stats.violations[:20]
    assert fuzz.stats.frames >= 3000, "the fuzz sent too few frames to mean much"
    assert fuzz.stats.replies[7] > 0 and fuzz.stats.replies[0] > 0
