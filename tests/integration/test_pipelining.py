"""Pipelined requests: a connection keeps serving while its chats wait for their group commit,
on every transport (asyncio Protocols, anyio streams, WebSocket), in-process on SQLite.

Its chats sent back to back share one or two transactions instead of one each; replies still
go out in request order (ACKs with rising pos), and a request of another kind is served only
once every request before it is answered (PROTOCOL.md: frames handled in order)."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import chatserver
from chatserver.adapters.serving import requests
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
TRANSPORTS = ["asyncio", "anyio", "websocket"]


class Wire:
    """JSON lines over TCP, or one JSON text per WebSocket message."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ws: Any = None

    @classmethod
    async def open(cls, transport: str, listening: chatserver.Listening) -> "Wire":
        wire = cls()
        if transport == "websocket":
            wire.ws = await ws_connect(f"ws://{HOST}:{listening.web_port}/ws")
        else:
            wire.reader, wire.writer = await asyncio.open_connection(HOST, listening.port)
        return wire

    async def send(self, frames: list[dict[str, Any]]) -> None:
        """Every frame at once: one write on TCP, back-to-back messages on WebSocket."""
        if self.ws is not None:
            for frame in frames:
                await self.ws.send(json.dumps(frame))
            return
        assert self.writer is not None
        self.writer.write(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        await self.writer.drain()

    async def next_frame(self) -> dict[str, Any]:
        if self.ws is not None:
            return dict(json.loads(await asyncio.wait_for(self.ws.recv(), 10)))
        assert self.reader is not None
        line = await asyncio.wait_for(self.reader.readline(), 10)
        assert line, "the server closed the connection"
        return dict(json.loads(line))

    async def replies(self, count: int) -> list[dict[str, Any]]:
        """The next count replies (frames with an errno), pushes skipped."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            frame = await self.next_frame()
            if "errno" in frame:
                got.append(frame)
        return got

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        elif self.writer is not None:
            self.writer.close()


async def logged_in(transport: str, listening: chatserver.Listening, name: str
                    ) -> tuple[Wire, int]:
    wire = await Wire.open(transport, listening)
    await wire.send([{"msgid": 4, "name": name, "password": "pw"}])
    user_id = (await wire.replies(1))[0]["id"]
    await wire.send([{"msgid": 1, "id": user_id, "password": "pw"}])
    assert (await wire.replies(1))[0]["errno"] == 0
    return wire, user_id


async def scenario(transport: str, database: Path, body: Any, *, pipeline: bool = True) -> Any:
    config = chatserver.Config(database=f"sqlite:///{database}", port=0,
                               ws_port=0 if transport == "websocket" else None,
                               transport=chatserver.TransportLimits(pipeline=pipeline))
    async with chatserver.open_node(config, hasher=FAST_HASHER) as app:
        listening = await app.start_serving("anyio" if transport == "anyio" else "asyncio")
        alice, _ = await logged_in(transport, listening, "alice")
        bob, bob_id = await logged_in(transport, listening, "bob")
        try:
            return await body(app, alice, bob_id)
        finally:
            await alice.close()
            await bob.close()
            await app.stop_serving()


def chats(to: int, count: int, first_seq: int = 1) -> list[dict[str, Any]]:
    return [{"msgid": 6, "toid": to, "msg": f"m{i}", "seq": first_seq + i} for i in range(count)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_eight_pipelined_chats_share_a_commit_and_are_acked_in_order(
    transport: str, tmp_path: Path
) -> None:
    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        writer = app.node.writer
        before = writer.batches
        started = time.perf_counter()
        await alice.send([*chats(bob_id, 8), {"msgid": 16, "seq": 100}])
        acks = await alice.replies(9)
        took = time.perf_counter() - started
        transactions = writer.batches - before
        print(f"{transport}: 8 chats + PING answered in {took * 1000:.1f} ms, "
              f"{transactions} transaction(s)")
        assert [a["seq"] for a in acks] == [*range(1, 9), 100]  # in request order
        assert all(a["errno"] == 0 for a in acks)
        positions = [a["pos"] for a in acks[:8]]
        assert positions == list(range(positions[0], positions[0] + 8))  # rising, no hole
        assert transactions in (1, 2), transactions  # not one per chat

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_pipelining_each_chat_is_served_after_the_one_before_is_answered(
    transport: str, tmp_path: Path
) -> None:
    """`serve --no-pipeline` (CHATSERVER_PIPELINE=0): one transaction per chat, for
    comparisons; the answers are the same."""

    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        before = app.node.writer.batches
        await alice.send(chats(bob_id, 8))
        acks = await alice.replies(8)
        transactions = app.node.writer.batches - before
        print(f"{transport}, no pipelining: 8 chats in {transactions} transactions")
        assert [a["seq"] for a in acks] == list(range(1, 9))
        assert all(a["errno"] == 0 for a in acks)
        assert transactions == 8, transactions

    asyncio.run(scenario(transport, tmp_path / "chat.db", body, pipeline=False))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_logout_after_pipelined_chats_is_served_after_all_of_them(
    transport: str, tmp_path: Path
) -> None:
    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        # Were LOGOUT served before the chats were answered, they would be errno 3.
        await alice.send([*chats(bob_id, 8), {"msgid": 3, "seq": 50},
                          *chats(bob_id, 2, first_seq=60)])
        replies = await alice.replies(11)
        assert [r["seq"] for r in replies] == [*range(1, 9), 50, 60, 61]
        assert [r["errno"] for r in replies] == [0] * 9 + [3, 3]  # logged out: not logged in

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_in_flight_requests_per_connection_are_bounded_without_errors(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requests, "IN_FLIGHT_LIMIT", 8)
    most: list[int] = [0]
    pipeline = requests.RequestServing._pipeline

    def counting(self: requests.RequestServing, *args: Any) -> None:
        most[0] = max(most[0], len(self._slots))
        pipeline(self, *args)

    monkeypatch.setattr(requests.RequestServing, "_pipeline", counting)

    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        await alice.send(chats(bob_id, 100))  # within the request burst of 200
        acks = await alice.replies(100)
        assert [a["seq"] for a in acks] == list(range(1, 101))
        assert all(a["errno"] == 0 for a in acks)
        positions = [a["pos"] for a in acks]
        assert positions == sorted(positions) and len(set(positions)) == 100
        print(f"{transport}: at most {most[0]} requests in flight (limit 8, +1 waiting)")
        assert most[0] <= 9

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_frame_among_pipelined_chats_is_answered_in_its_place(
    transport: str, tmp_path: Path
) -> None:
    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        frames = chats(bob_id, 3)
        frames.insert(1, {"msgid": 6, "toid": bob_id, "seq": 77})  # no msg: errno 7
        await alice.send(frames)
        replies = await alice.replies(4)
        assert [r["seq"] for r in replies] == [1, 77, 2, 3]
        assert [r["errno"] for r in replies] == [0, 7, 0, 0]

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chats_that_come_while_a_batch_gathers_join_it_without_a_task_each(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_tasks: list[int] = []
    pipelined = requests.RequestServing._pipelined

    async def counting(self: requests.RequestServing, slot: Any, request: Any,
                       started: float) -> None:
        in_tasks.append(request.seq)
        await pipelined(self, slot, request, started)

    monkeypatch.setattr(requests.RequestServing, "_pipelined", counting)

    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        await alice.send(chats(bob_id, 1, first_seq=0))  # message ids are reserved by now
        assert (await alice.replies(1))[0]["errno"] == 0
        in_tasks.clear()
        writer = app.node.writer
        before = writer.batches
        async with writer._lock:  # as if the batch before were being written
            await alice.send(chats(bob_id, 1))
            for _ in range(5000):  # its task leads the next batch, which gathers meanwhile
                if writer.gathering:
                    break
                await asyncio.sleep(0.001)
            assert writer.gathering
            await alice.send(chats(bob_id, 8, first_seq=2))
            await asyncio.sleep(0.2)  # read and served meanwhile: waiting for the commit
        acks = await alice.replies(9)
        assert [a["seq"] for a in acks] == list(range(1, 10))
        assert all(a["errno"] == 0 for a in acks)
        positions = [a["pos"] for a in acks]
        assert positions == list(range(positions[0], positions[0] + 9))
        assert writer.batches - before == 1
        # The other eight joined the batch: no task, no coroutine. On asyncio the first one
        # too: it started the batch, whose leader runs in a task of the server's.
        assert in_tasks == ([] if transport == "asyncio" else [1])

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
def test_a_request_waiting_on_the_database_holds_later_frames_and_replies_stay_in_order(
    transport: str, tmp_path: Path
) -> None:
    """The waiting path: a request whose use case waits on the database is served by the
    connection's task (an ordinary one, no private asyncio API); frames that arrive meanwhile
    wait behind it, and every reply goes out in request order once the database answers."""

    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        uow = app.node.uow
        gate = asyncio.Event()
        entered = asyncio.Event()
        original = uow.run

        async def gated_run(work: Any) -> Any:
            uow.run = original  # only the first call waits
            entered.set()
            await gate.wait()
            return await original(work)

        uow.run = gated_run
        started = time.perf_counter()
        await alice.send([{"msgid": 8, "groupname": "slow", "seq": 1}, {"msgid": 16, "seq": 2}])
        await asyncio.wait_for(entered.wait(), 5)
        # More frames arrive while the first request waits on the database.
        await alice.send([{"msgid": 16, "seq": 3}, *chats(bob_id, 1, first_seq=4),
                          {"msgid": 16, "seq": 5}, {"msgid": 17, "groupid": 999999, "seq": 6}])
        with pytest.raises(TimeoutError):  # nothing overtakes the waiting request
            await asyncio.wait_for(alice.next_frame(), 0.3)
        gate.set()
        replies = await alice.replies(6)
        took = time.perf_counter() - started
        print(f"{transport}: a request held 0.3 s by the database, 5 frames behind it: "
              f"all 6 answered {took * 1000:.0f} ms after the first was sent")
        assert [r["seq"] for r in replies] == [1, 2, 3, 4, 5, 6]
        assert [r["errno"] for r in replies][:5] == [0, 0, 0, 0, 0]
        assert replies[5]["errno"] != 0  # no such group: answered, in its place

    asyncio.run(scenario(transport, tmp_path / "chat.db", body))


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
def test_a_connection_the_server_ends_is_logged_with_the_servers_reason(
    transport: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16.5's log said "connection closed by the client" when the server had ended the
    connection (the unreceipted bound): the session's end now gives the server's reason, and
    "closed by the client" only when the client did close."""

    bob: list[int] = []

    async def body(app: chatserver.ChatApp, alice: Wire, bob_id: int) -> None:
        bob.append(bob_id)
        (bob_session,) = app.node.sessions.of(bob_id).values()
        bob_session.outbox.close("over 1000 deliveries unreceipted")
        await asyncio.sleep(0.3)
        await alice.close()  # the client's own close
        await asyncio.sleep(0.3)

    caplog.set_level("INFO", logger="chatserver")
    asyncio.run(scenario(transport, tmp_path / "chat.db", body))
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session end")]
    print(*ends, sep="\n")
    assert any(f"user={bob[0]} reason='over 1000 deliveries unreceipted'" in line
               for line in ends)
    assert any("reason='connection closed by the client'" in line for line in ends)
