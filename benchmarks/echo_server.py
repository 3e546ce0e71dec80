"""The echo baseline: the cheapest router of the benchmark's traffic, to measure the floor.

An asyncio Protocol server on uvloop (the default; ``--asyncio`` for the standard loop) with
orjson: frames end with LF or NUL (a partial frame is kept for the next read), REG assigns an
id (no hashing), LOGIN binds the id to the connection (no password check), ONE_CHAT's fields
are checked (``toid`` an integer, ``msg`` a string), stamped (``id``, ``name``, ``time``,
``ts``, ``msg_id``), relayed to the recipient's connection and ACKed; PING and LOGINOUT are
ACKed. It sends exactly the frames chatserver sends for that traffic (same fields,
LF-terminated) and writes once per connection per read batch. No database, no sessions: what
is left is JSON, syscalls, the event loop and loopback TCP. This is issue 15's "cheapest
Python router"; docs/performance.md says why its loop matters (the standard loop's costs ~2x
as much per message at W = 1).

    python -m benchmarks.echo_server --port 0 [--asyncio]

logs ``listening on HOST:PORT`` to stderr and stops on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import signal
import sys
import time
from typing import cast

import orjson

NL = orjson.OPT_APPEND_NEWLINE
ONE_CHAT = 6
LOGIN, LOGIN_ACK, LOGOUT, REG, REG_ACK, ACK, PING = 1, 2, 3, 4, 5, 11, 16

_time_texts: dict[int, str] = {}


def _time_text(second: int) -> str:
    text = _time_texts.get(second)
    if text is None:
        if len(_time_texts) > 1000:
            _time_texts.clear()
        text = _time_texts[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return text


class Router:
    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.online: dict[int, EchoProtocol] = {}
        self.next_user_id = 1
        self.next_msg_id = 1
        # Connections with output queued during the current read batch.
        self.dirty: list[EchoProtocol] = []


# One receive buffer for every connection: a read is copied out of it before the next one.
# (A plain Protocol on the stdlib loop of Python 3.11 receives into a fresh 256 KiB bytes
# object per read, which costs an mmap, an mremap and a munmap each time.)
READ_BUFFER = memoryview(bytearray(256 * 1024))


class EchoProtocol(asyncio.BufferedProtocol):
    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.out: list[bytes] = []
        self.user_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.user_id and self.router.online.get(self.user_id) is self:
            del self.router.online[self.user_id]
        self.transport = None

    def queue(self, frame: bytes) -> None:
        if not self.out:
            self.router.dirty.append(self)
        self.out.append(frame)

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        data = READ_BUFFER[:nbytes].tobytes()
        if self.buffer:
            data = self.buffer + data
        if b"\0" in data:  # the legacy dialect's frames end with NUL
            data = data.replace(b"\0", b"\n")
        frames = data.split(b"\n")
        self.buffer = frames.pop()
        router = self.router
        for frame in frames:
            if frame:
                self.handle(orjson.loads(frame))
        for conn in router.dirty:
            if conn.transport is not None:
                conn.transport.write(b"".join(conn.out) if len(conn.out) > 1 else conn.out[0])
            conn.out = []
        router.dirty.clear()

    def handle(self, request: dict) -> None:  # type: ignore[type-arg]
        msgid = request.get("msgid")
        seq = request.get("seq")
        router = self.router
        to_id, text = request.get("toid"), request.get("msg")
        if msgid == ONE_CHAT and (not isinstance(to_id, int) or not isinstance(text, str)):
            reply = {"msgid": ACK, "reply_to": ONE_CHAT, "errno": 2,
                     "errmsg": "toid and msg are required"}
        elif msgid == ONE_CHAT and self.user_id:
            msg_id = router.next_msg_id
            router.next_msg_id += 1
            now_ms = time.time_ns() // 1_000_000
            peer = router.online.get(to_id)
            if peer is not None:
                peer.queue(orjson.dumps({
                    "msgid": ONE_CHAT,
                    "id": self.user_id,
                    "name": router.names.get(self.user_id, ""),
                    "toid": to_id,
                    "msg": text,
                    "time": _time_text(now_ms // 1000),
                    "ts": now_ms,
                    "msg_id": msg_id,
                }, option=NL))
            reply = {"msgid": ACK, "reply_to": ONE_CHAT, "errno": 0, "msg_id": msg_id}
        elif msgid == LOGIN:
            user_id = request.get("id")
            if not isinstance(user_id, int) or user_id not in router.names:
                reply = {"msgid": LOGIN_ACK, "errno": 1, "errmsg": "id or password is invalid!"}
            else:
                self.user_id = user_id
                router.online[user_id] = self
                reply = {"msgid": LOGIN_ACK, "errno": 0, "id": user_id,
                         "name": router.names[user_id], "friends": [], "groups": [],
                         "offlinemsg": [], "friend_requests": []}
        elif msgid == REG:
            user_id = router.next_user_id
            router.next_user_id += 1
            router.names[user_id] = str(request.get("name", ""))
            reply = {"msgid": REG_ACK, "errno": 0, "id": user_id}
        elif msgid == LOGOUT and self.user_id:
            if router.online.get(self.user_id) is self:
                del router.online[self.user_id]
            self.user_id = 0
            reply = {"msgid": ACK, "reply_to": LOGOUT, "errno": 0}
        elif msgid == PING:
            reply = {"msgid": ACK, "reply_to": PING, "errno": 0}
        else:
            reply = {"msgid": ACK, "reply_to": msgid if isinstance(msgid, int) else 0,
                     "errno": 7, "errmsg": "not supported by the echo baseline"}
        if seq is not None:
            reply["seq"] = seq
        self.queue(orjson.dumps(reply, option=NL))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    router = Router()
    server = await loop.create_server(lambda: EchoProtocol(router), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"echo baseline listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for conn in list(router.online.values()):
        if conn.transport is not None:
            conn.transport.close()
    await server.wait_closed()
    print("echo baseline stopped", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--uvloop", dest="uvloop", action="store_true", default=True,
                      help="run on uvloop (the default)")
    loop.add_argument("--asyncio", dest="uvloop", action="store_false",
                      help="run on the standard asyncio loop instead")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    else:
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
