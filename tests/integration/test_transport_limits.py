"""The transports' limits over real sockets, on an in-process server with small limits: every
test runs over raw TCP and again over WebSocket (/ws), which must behave the same."""

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from attrs import evolve

from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.server import TcpServer
from chatserver.adapters.web.server import WebSocketServer
from chatserver.application.node import Limits
from chatserver.entrypoints.bootstrap import Config, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.integration

LIMITS = TransportLimits(
    request_burst=20,
    requests_per_second=10,
    refused_before_disconnect=30,
    login_timeout_seconds=1.0,
    idle_timeout_seconds=1.5,
    connections_per_address=5,
    outbound_bytes=64 * 1024,
    reply_backlog_bytes=16 * 1024,
)


class Line:
    """A blocking client: one JSON frame per line."""

    def __init__(self, port: int, *, receive_buffer: int = 0) -> None:
        self.sock = socket.socket()
        if receive_buffer:  # before connecting, so the window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, *frames: dict[str, object]) -> None:
        self.sock.sendall(b"".join(json.dumps(f).encode() + b"\n" for f in frames))

    def recv(self) -> dict[str, object] | None:
        """The next frame, or None at end of stream."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def request(self, frame: dict[str, object]) -> dict[str, object]:
        self.send(frame)
        reply = self.recv()
        assert reply is not None
        return reply

    def close(self) -> None:
        self.sock.close()

    def closed_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if self.recv() is None:
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False


class WebSocketLine(Line):
    """The same blocking client over WebSocket: one frame per message."""

    def __init__(self, port: int, *, receive_buffer: int = 0) -> None:
        from websockets.sync.client import connect

        sock = socket.socket()
        if receive_buffer:  # before connecting, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        # A small receive queue too, so a client that stops reading shows soon.
        self.ws = connect(
            f"ws://127.0.0.1:{port}/ws", sock=sock, max_queue=4 if receive_buffer else 16,
            max_size=None, close_timeout=1, open_timeout=5,
        ).__enter__()
        self.timeout = 5.0

    def send(self, *frames: dict[str, object]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for frame in frames:
                self.ws.send(json.dumps(frame))
        except ConnectionClosed as error:
            raise BrokenPipeError("closed by the server") from error

    def recv(self) -> dict[str, object] | None:
        from websockets.exceptions import ConnectionClosed

        try:
            message = self.ws.recv(timeout=self.timeout)
        except ConnectionClosed:
            return None
        return json.loads(message)

    def closed_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        self.timeout = 0.2
        while time.monotonic() < deadline:
            try:
                if self.recv() is None:
                    return True
            except TimeoutError:
                continue
        return False

    def close(self) -> None:
        self.ws.close()


@dataclass(frozen=True)
class Endpoint:
    transport: str
    port: int

    def connect(self, *, receive_buffer: int = 0) -> Line:
        kind = WebSocketLine if self.transport == "websocket" else Line
        return kind(self.port, receive_buffer=receive_buffer)


@contextmanager
def serving(limits: TransportLimits, transport: str) -> Iterator[Endpoint]:
    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as app:
            kind = WebSocketServer if transport == "websocket" else TcpServer
            server = kind(app.node, "127.0.0.1", 0, limits)
            await server.serve(task_status=task_status)

    with start_blocking_portal("asyncio") as portal:
        future, port = portal.start_task(serve)
        yield Endpoint(transport, port)
        future.cancel()


@pytest.fixture(params=["tcp", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def port(transport: str) -> Iterator[Endpoint]:
    with serving(LIMITS, transport) as endpoint:
        yield endpoint


def register_and_login(
    port: Endpoint, name: str, *, receipts: bool = False, receive_buffer: int = 0
) -> tuple[Line, int]:
    client = port.connect(receive_buffer=receive_buffer)
    user = client.request({"msgid": 4, "name": name, "password": "pw"})["id"]
    assert client.request({"msgid": 1, "id": user, "password": "pw", "receipts": receipts})[
        "errno"
    ] == 0
    assert isinstance(user, int)
    return client, user


def test_a_burst_passes_then_errno_9_then_a_flooder_is_cut_off(port: Endpoint) -> None:
    client = port.connect()
    client.send(*[{"msgid": 16, "seq": i} for i in range(LIMITS.request_burst + 5)])
    replies = [client.recv() for _ in range(LIMITS.request_burst + 5)]
    assert [r["errno"] for r in replies[: LIMITS.request_burst]] == [0] * LIMITS.request_burst
    assert {r["errno"] for r in replies[LIMITS.request_burst :]} == {9}
    time.sleep(0.5)  # the budget refills at its rate
    assert client.request({"msgid": 16})["errno"] == 0
    with suppress(BrokenPipeError, ConnectionResetError):  # it may be cut off mid-flood
        client.send(*[{"msgid": 16}] * 200)
    assert client.closed_within(5)
    assert port.connect().request({"msgid": 16})["errno"] == 0  # others are not affected


def test_a_connection_that_spoke_but_never_logs_in_is_closed(port: Endpoint) -> None:
    # One that has sent nothing may be an original client at its menu: it stays (see
    # test_original_client.py, where the cap per address bounds those).
    client = port.connect()
    assert client.request({"msgid": 16})["errno"] == 0
    assert client.closed_within(LIMITS.login_timeout_seconds + 2)


def test_a_silent_session_is_closed_and_a_pinging_one_is_not(port: Endpoint) -> None:
    silent, _ = register_and_login(port, "silent")
    pinging, _ = register_and_login(port, "pinging")
    for _ in range(4):
        time.sleep(0.5)
        assert pinging.request({"msgid": 16})["errno"] == 0
    assert silent.closed_within(2)


def test_connections_per_address_are_capped(port: Endpoint) -> None:
    held = [port.connect() for _ in range(LIMITS.connections_per_address)]
    for client in held:
        assert client.request({"msgid": 16})["errno"] == 0
    refused = port.connect()
    reply = refused.recv()
    assert reply is not None and reply["errno"] == 9
    assert refused.closed_within(2)
    held.pop().close()
    time.sleep(0.2)
    assert port.connect().request({"msgid": 16})["errno"] == 0


def test_wrong_passwords_throttle_the_account(port: Endpoint) -> None:
    client = port.connect()
    user = client.request({"msgid": 4, "name": "target", "password": "right"})["id"]
    for _ in range(Limits().failed_logins_per_account_and_address):
        assert client.request({"msgid": 1, "id": user, "password": "wrong"})["errno"] == 1
    assert client.request({"msgid": 1, "id": user, "password": "right"})["errno"] == 9


def test_a_client_that_stops_reading_is_cut_off_and_loses_nothing(transport: str) -> None:
    limits = evolve(LIMITS, request_burst=1000, requests_per_second=1000)
    with serving(limits, transport) as port:
        sender, _ = register_and_login(port, "sender")
        reader, reader_id = register_and_login(
            port, "reader", receipts=True, receive_buffer=4096
        )
        accepted = []
        text = "😀" * 4096  # 16 KiB a frame
        for _ in range(400):  # far more than the kernel buffers and the outbound limit hold
            reply = sender.request({"msgid": 6, "toid": reader_id, "msg": text})
            assert reply["errno"] == 0
            accepted.append(reply["msg_id"])
        assert reader.closed_within(5)  # cut off, not allowed to grow the server's memory
        check_nothing_lost(port, reader_id, accepted)


def check_nothing_lost(port: Endpoint, reader_id: object, accepted: list[object]) -> None:
    again = port.connect()
    ack = again.request({"msgid": 1, "id": reader_id, "password": "pw", "receipts": True})
    offline = ack["offlinemsg"]
    assert isinstance(offline, list)
    got = [m["msg_id"] for m in offline]
    while len(got) < len(accepted):
        frame = again.recv()
        assert frame is not None
        got.append(frame["msg_id"])
    # Whatever the closed connection had not receipted comes back; nothing acknowledged is lost.
    assert set(accepted) <= set(got)


def test_a_client_that_floods_at_just_over_the_rate_is_cut_off_too(port: Endpoint) -> None:
    client = port.connect()
    deadline = time.monotonic() + 10
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            client.send(*[{"msgid": 16}] * 5)  # 250 a second against a budget of 10
        except OSError:
            closed = True
        time.sleep(0.02)
    assert closed or client.closed_within(2)


def test_malformed_frames_are_charged_and_a_flood_of_them_is_cut_off(port: Endpoint) -> None:
    """Issue 16.4: malformed frames were answered (errno 7) before the budget was charged, so
    a flood of them was never refused nor cut off."""
    client = port.connect()
    with suppress(BrokenPipeError, ConnectionResetError):
        client.send(*[{"msgid": 99}] * (LIMITS.request_burst + 10))
    replies = [client.recv() for _ in range(LIMITS.request_burst + 10)]
    errnos = [r["errno"] for r in replies if r is not None]
    assert errnos[: LIMITS.request_burst] == [7] * LIMITS.request_burst
    assert set(errnos[LIMITS.request_burst :]) == {9}
    with suppress(BrokenPipeError, ConnectionResetError):
        client.send(*[{"msgid": 99}] * 200)
    assert client.closed_within(5)
    assert port.connect().request({"msgid": 16})["errno"] == 0  # others are not affected
