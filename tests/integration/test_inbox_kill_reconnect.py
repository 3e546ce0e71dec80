"""No gap, ever, when a node dies (issue 12, PROTOCOL.md Version 2 "The inbox").

Two `chatserver serve` processes on one database (MariaDB, or a shared SQLite file) and one
Redis bus. One user is logged in on two devices with receipts, one device on each node; 50
senders, half on each node, send to that user as fast as their ACKs come back. Halfway
through, one node is SIGKILLed: its senders and its device log in again on the surviving node,
the device with `since` = the highest pos it has (what a client that trusts its pos would do).
When the traffic stops, each device SYNCs from the highest pos it has up to `last_pos`.

What must hold, for each device:
- within each session, the pos of what it was sent (offlinemsg, then live) goes up by exactly
  one each time, starting right after the `since` of that login;
- everything it received (live, offlinemsg, SYNC) holds every pos 1..last_pos, no hole, and no
  pos names two messages, nor one message two pos;
- every acknowledged msg_id is in it, and both devices hold the same inbox.

Checked to fail: with the gap filler's reads dropped (GapFiller.fill passing no entries), 4 of
6 runs failed ("pc session 1: pos 2392 (live) where 2391 was due"): the kill leaves holes that
only the gap filler closes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.integration.conftest import HOST, ServerProcess, unique_name
from tests.unit.contract.mysql_server import MYSQL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REDIS = "redis://127.0.0.1:6379/0"
LEASE = "3"  # seconds: a killed node's sessions count as gone this soon
SENDERS = 50
BEFORE_KILL = 2.0  # seconds of traffic before the kill, then as long after it
AFTER_KILL = 3.0
PACE = 0.02  # a sender's pause between an ACK and its next message (rate limit: 50/s)
REPLY_TIMEOUT = 10.0
LOST = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead, OSError)
KEPT = (6, 10, 13)  # the S->C objects that carry a msg_id and a pos


class Lost(Exception):
    """The connection went (its node was killed)."""


class Line:
    """One modern-dialect connection: JSON frames ending with LF."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.frames = BufferedByteReceiveStream(stream)
        self.seq = 0

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            await self.stream.send(json.dumps(frame).encode() + b"\n")
        except LOST as error:
            raise Lost() from error

    async def recv(self) -> dict[str, Any]:
        try:
            frame: dict[str, Any] = json.loads(await self.frames.receive_until(b"\n", 1 << 24))
        except LOST as error:
            raise Lost() from error
        return frame

    async def request(self, frame: dict[str, Any], pushed: list[dict[str, Any]]) -> Any:
        """Send frame; return its reply. What else arrives meanwhile goes to pushed."""
        self.seq += 1
        await self.send({**frame, "seq": self.seq})
        with anyio.fail_after(REPLY_TIMEOUT):
            while True:
                reply = await self.recv()
                if reply.get("msgid") in (2, 5, 11) and reply.get("seq") == self.seq:
                    return reply
                pushed.append(reply)


@contextlib.asynccontextmanager
async def line_to(port: int) -> AsyncIterator[Line]:
    try:
        stream = await anyio.connect_tcp(HOST, port)
    except OSError as error:
        raise Lost() from error
    async with stream:
        yield Line(stream)


@dataclass
class Device:
    """What one device of the user received, over all its sessions."""

    name: str
    got: dict[int, int] = field(default_factory=dict)  # pos -> msg_id
    problems: list[str] = field(default_factory=list)
    sessions: int = 0
    synced_to: int = 0

    @property
    def highest(self) -> int:
        return max(self.got, default=0)

    def keep(self, obj: dict[str, Any], how: str) -> None:
        pos, msg_id = obj["pos"], obj["msg_id"]
        seen = self.got.setdefault(pos, msg_id)
        if seen != msg_id:
            self.problems.append(f"{self.name}: pos {pos} names {seen} and {msg_id} ({how})")


@dataclass
class Traffic:
    acked: set[int] = field(default_factory=set)
    refused: dict[int, int] = field(default_factory=dict)  # errno -> count
    unanswered: int = 0  # sent, then the connection went before the ACK
    acked_after_kill: int = 0
    killed: bool = False
    problems: list[str] = field(default_factory=list)


def start_node(database: str, tmp_path: Path, name: str, bus: str) -> ServerProcess:
    args = ["--bus", bus, "--node-id", name, "--node-lease", LEASE, "--hash-cost", "1024"]
    return ServerProcess(database, tmp_path / f"{name}.log", args).start()


async def register(port: int, count: int) -> list[tuple[int, str]]:
    users: list[tuple[int, str]] = []

    async def one() -> None:
        async with line_to(port) as line:
            password = secrets.token_hex(6)
            reply = await line.request(
                {"msgid": 4, "name": unique_name("kill"), "password": password}, []
            )
            assert reply["errno"] == 0, reply
            users.append((reply["id"], password))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return users


@pytest.fixture(params=["mysql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """MariaDB, as a cluster is deployed; or one SQLite file both nodes share (WAL), which a
    SIGKILL can leave mid-commit."""
    if request.param == "mysql":
        return MYSQL.new_database()
    return f"sqlite:///{tmp_path / 'cluster.db'}"


async def test_senders_and_devices_of_a_killed_node_reconnect_and_no_device_has_a_gap(
    tmp_path: Path, database: str
) -> None:
    bus = f"{REDIS}?namespace=kill-{secrets.token_hex(4)}"
    a = start_node(database, tmp_path, "a", bus)
    b = start_node(database, tmp_path, "b", bus)
    assert a.port is not None and b.port is not None
    survivor = a.port
    started = time.monotonic()
    try:
        (target, target_password), *senders = await register(a.port, SENDERS + 1)
        traffic = Traffic()
        devices = [Device("pc"), Device("phone")]
        stop_sending, stop_listening = anyio.Event(), anyio.Event()
        logged_in = 0
        everyone_in = anyio.Event()

        def count_login() -> None:
            nonlocal logged_in
            logged_in += 1
            if logged_in == SENDERS + len(devices):
                everyone_in.set()

        async def send(user: tuple[int, str], port: int) -> None:
            first = True
            last_pos = 0
            while not stop_sending.is_set():
                try:
                    async with line_to(port) as line:
                        ack = await line.request(
                            {"msgid": 1, "id": user[0], "password": user[1]}, []
                        )
                        assert ack["errno"] == 0, ack
                        if first:
                            count_login()
                            first = False
                        await everyone_in.wait()
                        n = 0
                        while not stop_sending.is_set():
                            n += 1
                            try:
                                reply = await line.request(
                                    {"msgid": 6, "toid": target, "msg": f"{user[0]}:{n}"}, []
                                )
                            except Lost:
                                traffic.unanswered += 1
                                raise
                            if reply["errno"] == 0:
                                traffic.acked.add(reply["msg_id"])
                                traffic.acked_after_kill += traffic.killed
                                # The sender's own inbox keeps its sends (carbons): rising pos.
                                if reply["pos"] <= last_pos:
                                    traffic.problems.append(
                                        f"sender {user[0]}: ACK pos {reply['pos']} after "
                                        f"{last_pos}"
                                    )
                                last_pos = reply["pos"]
                            else:
                                errno = reply["errno"]
                                traffic.refused[errno] = traffic.refused.get(errno, 0) + 1
                            await anyio.sleep(PACE)
                except Lost:
                    port = survivor  # its node died: come back on the one still there

        async def listen(device: Device, port: int) -> None:
            first = True
            while True:
                try:
                    async with line_to(port) as line:
                        await session(device, line, first)
                        return
                except Lost:
                    port = survivor
                    first = False

        async def session(device: Device, line: Line, first: bool) -> None:
            device.sessions += 1
            since = device.highest
            login = {"msgid": 1, "id": target, "password": target_password,
                     "receipts": True, "device": device.name, "since": since}
            early: list[dict[str, Any]] = []
            ack = await line.request(login, early)
            assert ack["errno"] == 0, ack
            if first:
                count_login()
            expected = since + 1  # the pos this session must be sent next
            receipts: list[int] = []

            def take(obj: dict[str, Any], how: str) -> None:
                nonlocal expected
                if obj.get("msgid") not in KEPT:
                    return
                if obj["pos"] != expected:
                    device.problems.append(
                        f"{device.name} session {device.sessions}: pos {obj['pos']} "
                        f"({how}) where {expected} was due"
                    )
                expected = max(expected, obj["pos"] + 1)
                device.keep(obj, how)
                receipts.append(obj["msg_id"])

            for frame in early:
                take(frame, "before the login ack")
            for obj in ack["offlinemsg"]:
                take(obj, "offlinemsg")
            last_receipt = time.monotonic()
            while not (stop_listening.is_set() and not receipts):
                with anyio.move_on_after(0.05):
                    frame = await line.recv()
                    if frame.get("msgid") == 11:
                        assert frame["errno"] == 0, frame  # a RECEIPT's ACK
                    else:
                        take(frame, "live")
                now = time.monotonic()
                if receipts and (now - last_receipt > 0.1 or stop_listening.is_set()):
                    await line.send({"msgid": 19, "msg_ids": receipts[:]})
                    receipts.clear()
                    last_receipt = now
            # Catch up from the highest pos this device has, as a client would.
            while True:
                pushed: list[dict[str, Any]] = []
                reply = await line.request(
                    {"msgid": 20, "since": device.highest, "limit": 500}, pushed
                )
                assert reply["errno"] == 0, reply
                for frame in pushed:
                    if frame.get("msgid") in KEPT:
                        device.keep(frame, "live, during SYNC")
                for obj in reply["msgs"]:
                    device.keep(obj, "SYNC")
                if reply.get("truncated"):
                    device.problems.append(f"{device.name}: SYNC truncated: {reply}")
                device.synced_to = reply["last_pos"]
                if device.highest >= reply["last_pos"] or not reply["msgs"]:
                    return

        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, devices[0], a.port)
                tg.start_soon(listen, devices[1], b.port)
                for i, user in enumerate(senders):
                    tg.start_soon(send, user, a.port if i % 2 == 0 else b.port)
                await everyone_in.wait()
                await anyio.sleep(BEFORE_KILL)
                acked_before = len(traffic.acked)
                await anyio.to_thread.run_sync(b.kill)  # SIGKILL: mid-traffic, no goodbye
                traffic.killed = True
                await anyio.sleep(AFTER_KILL)
                stop_sending.set()
                await anyio.sleep(0.5)  # the last ACKed messages reach the devices live
                stop_listening.set()

        elapsed = time.monotonic() - started
        print(
            f"\n{len(traffic.acked)} acknowledged ({acked_before} before the kill, "
            f"{traffic.acked_after_kill} after), {traffic.unanswered} unanswered when the "
            f"node died, refused by errno {traffic.refused}; sessions per device "
            f"{[d.sessions for d in devices]}; last_pos {[d.synced_to for d in devices]} "
            f"({devices[0].synced_to - len(traffic.acked)} kept but never acknowledged); "
            f"{elapsed:.1f} s"
        )
        problems = traffic.problems + [p for d in devices for p in d.problems]
        assert not problems, "\n".join(problems[:30])
        assert acked_before >= 100 and traffic.acked_after_kill >= 100, (
            "too little traffic around the kill to say anything"
        )
        assert devices[1].sessions == 2, "the phone on the killed node logged in again"
        for device in devices:
            last = device.synced_to
            holes = sorted(set(range(1, last + 1)) - device.got.keys())
            assert not holes, f"{device.name}: no pos {holes[:20]} (of 1..{last})"
            assert device.highest == last, f"{device.name}: pos beyond last_pos {last}"
            ids = list(device.got.values())
            assert len(set(ids)) == len(ids), f"{device.name}: a message at two pos"
            missing = traffic.acked - set(ids)
            assert not missing, f"{device.name}: {len(missing)} acknowledged messages missing"
        assert devices[0].got == devices[1].got, "the two devices hold different inboxes"
        assert elapsed < 50
    finally:
        for node in (a, b):
            node.stop()
        a.assert_no_traceback()
