"""The load generator's connections: raw asyncio Protocols speaking PROTOCOL.md (JSON + LF).

During setup a connection sends one request at a time and awaits its reply; during a measured
phase a scenario installs ``on_frames``, which gets every complete frame of a read at once
(so a read batch costs one clock reading and at most one write per partner).
"""

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import orjson

REPLY_MSGIDS = frozenset({2, 5, 11})  # LOGIN_MSG_ACK, REG_MSG_ACK, ACK_MSG
PASSWORD = "bench-pass"
REQUEST_TIMEOUT_SECONDS = 60.0

loads = orjson.loads
now_ns = time.perf_counter_ns
T = TypeVar("T")


class RequestFailed(RuntimeError):
    def __init__(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        super().__init__(f"{request.get('msgid')} failed: errno {reply.get('errno')} "
                         f"{reply.get('errmsg')!r}")
        self.reply = reply


# One receive buffer for all connections: each read is copied out before the next one. (A
# plain Protocol on the stdlib loop of Python 3.11 mmaps a fresh 256 KiB object per read.)
READ_BUFFER = memoryview(bytearray(256 * 1024))


class Client(asyncio.BufferedProtocol):
    """One connection of the load generator."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.replies: deque[asyncio.Future[dict[str, Any]]] = deque()
        self.on_frames: Callable[[Client, list[bytes]], None] | None = None
        self.user_id = 0
        self.name = ""
        self.lost = False
        self.pushes = 0  # frames that were not replies, outside measured phases
        # Per-phase state, set by the scenario.
        self.partner: Client | None = None
        self.window = 1
        self.inflight = 0
        self.sending = False
        self.sent = self.acked = self.received = self.errors = self.other = 0
        # Messages of an earlier phase that arrived in this one (after its drain ran out).
        self.late = 0
        self.first_error: dict[str, Any] | None = None
        self.errnos: dict[int, int] = {}
        self.frame_head = b""
        self.frame_tail = b""
        self.latencies: list[int] | None = None
        self.state: Any = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.replies:
            future = self.replies.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        data = READ_BUFFER[:nbytes].tobytes()
        if self.buffer:
            data = self.buffer + data
        frames = data.split(b"\n")
        self.buffer = frames.pop()
        if self.on_frames is not None:
            self.on_frames(self, frames)
            return
        for frame in frames:
            if not frame:
                continue
            obj = loads(frame)
            if obj.get("msgid") in REPLY_MSGIDS and self.replies:
                future = self.replies.popleft()
                if not future.done():
                    future.set_result(obj)
            else:
                self.pushes += 1

    # Setup: one request at a time.

    async def request(self, obj: dict[str, Any], seconds: float = REQUEST_TIMEOUT_SECONDS,
                      *, check: bool = True) -> dict[str, Any]:
        if self.transport is None or self.lost:
            raise ConnectionError("not connected")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies.append(future)
        self.transport.write(orjson.dumps(obj) + b"\n")
        reply = await asyncio.wait_for(future, seconds)
        if check and reply.get("errno") != 0:
            raise RequestFailed(obj, reply)
        return reply

    async def register(self, name: str, password: str = PASSWORD) -> int:
        reply = await self.request({"msgid": 4, "name": name, "password": password})
        self.name = name
        self.user_id = int(reply["id"])
        return self.user_id

    async def login(self, user_id: int, password: str = PASSWORD) -> dict[str, Any]:
        reply = await self.request({"msgid": 1, "id": user_id, "password": password})
        self.user_id = user_id
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Measured phases.

    def reset_counters(self) -> None:
        self.inflight = 0
        self.sent = self.acked = self.received = self.errors = self.other = self.late = 0
        self.first_error = None
        self.errnos = {}

    def count_reply(self, obj: dict[str, Any]) -> None:
        if obj.get("errno") == 0:
            self.acked += 1
        else:
            self.errors += 1
            errno = obj.get("errno")
            key = errno if isinstance(errno, int) else -1
            self.errnos[key] = self.errnos.get(key, 0) + 1
            if self.first_error is None:
                self.first_error = obj


async def connect(host: str, port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(Client, host, port), REQUEST_TIMEOUT_SECONDS)
    return client


async def bounded_gather(
    factories: Iterable[Callable[[], Awaitable[T]]], limit: int
) -> list[T]:
    """Run the coroutines ``limit`` at a time, in order; the first failure propagates."""
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories))


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


async def open_logged_in(
    host: str, port: int, user_names: list[str], user_ids: list[int] | None, concurrency: int
) -> list[Client]:
    """A logged-in connection per user: registered first on the same connection unless
    ``user_ids`` says they exist already. ``concurrency`` setups at a time."""

    async def setup(index: int) -> Client:
        client = await connect(host, port)
        if user_ids is None:
            user_id = await client.register(user_names[index])
        else:
            user_id = user_ids[index]
        client.name = user_names[index]
        await client.login(user_id)
        return client

    return await bounded_gather(
        (lambda i=i: setup(i) for i in range(len(user_names))), concurrency)


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def errnos_of(clients: Iterable[Client]) -> dict[str, int]:
    """Error replies by errno over ``clients`` (JSON keys are strings)."""
    total: dict[str, int] = {}
    for client in clients:
        for errno, count in client.errnos.items():
            total[str(errno)] = total.get(str(errno), 0) + count
    return total
