"""`python -m benchmarks.hot_path`: the server's Python cost per ONE_CHAT without sockets.

Two logged-in clients of the asyncio-Protocol transport, on fake transports that only count
bytes, inside one process; each round hands client A a read of W frames to B (as the event loop
would), then lets the loop run the flushes. What is left is what chatserver's own code costs per
message: framing, decoding, the budget, the use case, routing, encoding, queueing, and one
write call per connection per batch. The kernel's share (syscalls, wake-ups) is not in it.
Timed with the process's CPU clock, best of several rounds, so a busy machine matters less
than in the socket benchmarks. ``--profile`` prints a cProfile of the run instead.
"""

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from chatserver.adapters.security import ScryptHasher
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.protocol_server import ProtocolServer
from chatserver.adapters.tcp.protocol_transport import ProtocolClient
from chatserver.application.node import Limits
from chatserver.entrypoints.bootstrap import Config, bootstrap


class CountingTransport(asyncio.Transport):
    """Takes every write at once (as an idle socket would) and counts the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0
        self.frames = 0  # LF-ended frames written
        self.last = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += len(data)
        self.writes += 1
        self.frames += data.count(b"\n")
        self.last = data

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _read(client: ProtocolClient, data: bytes) -> None:
    buffer = client.get_buffer(len(data))
    buffer[: len(data)] = data
    client.buffer_updated(len(data))


def feed(client: ProtocolClient, data: bytes) -> None:
    """What the event loop does when a read brings ``data``: a callback of its own."""
    asyncio.get_running_loop().call_soon(_read, client, data)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def logged_in(server: ProtocolServer, name: str) -> tuple[ProtocolClient, int]:
    """A client registered and logged in by name, over the transport; and its user id."""
    client = server._new_client()
    transport = CountingTransport()
    client.connection_made(transport)
    feed(client, b'{"msgid":4,"name":"%s","password":"pw"}\n' % name.encode())
    await until(lambda: transport.writes > 0)  # the reply to REG (the hash is in a thread)
    feed(client, b'{"msgid":1,"name":"%s","password":"pw"}\n' % name.encode())
    await until(lambda: client.connection.session is not None)
    await settle()
    session = client.connection.session
    assert session is not None
    return client, session.user.id


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("the server did not answer")


async def group_of(clients: list[ProtocolClient]) -> int:
    """A group that the first client creates and the others join; its id."""
    creator = clients[0]
    transport = creator.transport
    assert isinstance(transport, CountingTransport)
    writes = transport.writes
    feed(creator, b'{"msgid":8,"groupname":"hot","groupdesc":""}\n')
    await until(lambda: transport.writes > writes)
    group_id = int(orjson.loads(transport.last.splitlines()[-1])["groupid"])
    joined: dict[CountingTransport, int] = {}  # each joiner's writes before its reply
    for client in clients[1:]:
        assert isinstance(client.transport, CountingTransport)
        joined[client.transport] = client.transport.writes
        feed(client, b'{"msgid":9,"groupid":%d}\n' % group_id)
    await until(lambda: all(t.writes > writes for t, writes in joined.items()))
    await settle()
    return group_id


async def measure(window: int, messages: int, rounds: int, profile: bool,
                  metrics: bool = False, members: int = 0, database: str = "memory://",
                  history_days: int = 30) -> dict[str, Any]:
    # A metrics port makes bootstrap build the Prometheus metrics; nothing serves them here.
    config = Config(database=database, node_id="hot-path", metrics_port=0 if metrics else None,
                    limits=Limits(history_days=history_days))
    limits = TransportLimits(request_burst=10**9, requests_per_second=1e9,
                             connections_per_address=0)
    async with bootstrap(config, hasher=ScryptHasher(n=2, r=1, p=1)) as app:
        server = ProtocolServer(app.node, "127.0.0.1", 0, limits, metrics=app.metrics)
        server._loop = asyncio.get_running_loop()
        a, _ = await logged_in(server, "hot-a")
        b, b_id = await logged_in(server, "hot-b")
        frame = b'{"msgid":6,"toid":%d,"msg":"00000000001234567890xxxxxxxxxxxx"}\n' % b_id
        copies = 1  # deliveries per message
        if members:  # GROUP_CHAT to a group of that many, all online, instead
            clients = [a, b] + [(await logged_in(server, f"hot-{i}"))[0]
                                for i in range(2, members)]
            group_id = await group_of(clients)
            frame = b'{"msgid":10,"groupid":%d,"msg":"00000000001234567890xxxxxxxxxxxx"}\n' % (
                group_id)
            copies = members - 1
            messages = max(window, messages // copies)
        batch = frame * window
        batches = max(1, messages // window)
        best = float("inf")
        best_loop = float("inf")  # the event loop's thread alone, in the best round
        transactions = 0  # inbox batches written in the best round
        profiler = cProfile.Profile() if profile else None
        gc.collect()
        # As serve does by default (every second; here once, after the set-up); `--gc default`
        # or CHATSERVER_GC=default turns it off there, the environment variable here.
        if os.environ.get("CHATSERVER_GC", "freeze") == "freeze":
            gc.freeze()
        a_transport = a.transport
        assert isinstance(a_transport, CountingTransport)
        for _ in range(rounds):
            acked = a_transport.frames + batches * window  # A's ACKs at the end of the round
            batches_before = app.node.writer.batches
            started = time.process_time()
            loop_started = time.thread_time()
            if profiler is not None:
                profiler.enable()
            for _ in range(batches):
                feed(a, batch)
                await asyncio.sleep(0)  # the flushes of A's replies and B's pushes
            # With the inbox a chat is answered after its commit: the round ends when every
            # one is (A's own pushes, carbons to other devices, are none here).
            await until(lambda acked=acked: a_transport.frames >= acked)  # type: ignore[misc]
            if profiler is not None:
                profiler.disable()
            spent = time.process_time() - started
            if spent < best:
                best, best_loop = spent, time.thread_time() - loop_started
                transactions = app.node.writer.batches - batches_before
        await settle()
        assert a.transport is not None and b.transport is not None
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(35)
        return {"window": window, "messages": batches * window, "copies": copies,
                "us_per_message": round(1e6 * best / (batches * window), 2),
                "loop_us_per_message": round(1e6 * best_loop / (batches * window), 2),
                "messages_per_transaction": round(batches * window / max(transactions, 1), 1),
                "us_per_copy": round(1e6 * best / (batches * window * copies), 2)}


def _fresh(database: str) -> str:
    """database, with an SQLite file of that name removed first (each run starts empty)."""
    if database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return database


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hot_path", description=__doc__)
    parser.add_argument("--window", type=int, action="append", default=None,
                        help="frames per read (repeatable; default 1 and 8)")
    parser.add_argument("--messages", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="best of (default 5)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--profile", action="store_true", help="print a cProfile instead")
    parser.add_argument("--group", type=int, default=0, metavar="MEMBERS",
                        help="GROUP_CHAT to a group of MEMBERS users, all online, instead; "
                        "timed per delivered copy")
    parser.add_argument("--metrics", action="store_true",
                        help="with the Prometheus metrics (serve --metrics-port) counting")
    parser.add_argument("--database", default="memory://",
                        help="the store (default memory://); sqlite:///PATH for serve's "
                        "default, a fresh file per run")
    parser.add_argument("--history-days", type=int, default=30,
                        help="serve --history-days (default 30: history on; 0: off)")
    args = parser.parse_args()
    for window in args.window or [1, 8]:
        run = measure(window, args.messages, 1 if args.profile else args.rounds, args.profile,
                      args.metrics, args.group, _fresh(args.database), args.history_days)
        if args.uvloop:
            import uvloop

            result = uvloop.run(run)
        else:
            result = asyncio.run(run)
        if args.group:
            print(f"W={result['window']}: {result['us_per_copy']:.2f} µs of the server's CPU "
                  f"per delivered copy, {result['us_per_message']:.1f} per group message of "
                  f"{result['copies']} copies (best of {args.rounds} rounds of "
                  f"{result['messages']:,})")
            continue
        print(f"W={result['window']}: {result['us_per_message']:.2f} µs of the server's CPU "
              f"per message, {result['loop_us_per_message']:.2f} of it the event loop's thread; "
              f"{result['messages_per_transaction']:g} messages per inbox transaction "
              f"(best of {args.rounds} rounds of {result['messages']:,})")


if __name__ == "__main__":
    main()
