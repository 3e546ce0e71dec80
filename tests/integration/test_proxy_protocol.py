"""serve --proxy-protocol: each connection names its client in a PROXY header, and limits per
address apply to those addresses. In-process on both transports, then through real nginx."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from chatserver.adapters.proxy_header import V2_SIGNATURE
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.protocol_server import ProtocolServer
from chatserver.adapters.tcp.server import TcpServer
from chatserver.application.node import Limits
from chatserver.entrypoints.bootstrap import Config, bootstrap
from tests.integration.conftest import HOST, free_port, free_port_block
from tests.unit.conftest import FAST_HASHER

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

pytestmark = pytest.mark.integration

LIMITS = TransportLimits(
    proxy_protocol=True, proxy_header_seconds=0.5, connections_per_address=2
)
FAILED_LOGINS_PER_ADDRESS = 3


def v1(source: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 6000\r\n".encode()


def v2(source: str, port: int = 40000) -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 1)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


class Line:
    """A blocking client that may send a PROXY header first, as nginx would."""

    def __init__(self, port: int, header: bytes = b"", *, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (HOST, port), timeout=5, source_address=(source, 0) if source else None
        )
        self.buffer = b""
        if header:
            self.sock.sendall(header)

    def send(self, *frames: dict[str, object]) -> None:
        self.sock.sendall(b"".join(json.dumps(f).encode() + b"\n" for f in frames))

    def recv(self) -> dict[str, object] | None:
        """The next frame, or None at end of stream."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def request(self, frame: dict[str, object]) -> dict[str, object]:
        self.send(frame)
        reply = self.recv()
        assert reply is not None, "connection closed"
        return reply

    def closed_without_reply(self) -> bool:
        return self.recv() is None


@contextmanager
def serving(transport: str) -> Iterator[int]:
    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        config = Config(
            database="memory://",
            limits=Limits(failed_logins_per_address=FAILED_LOGINS_PER_ADDRESS),
        )
        async with bootstrap(config, hasher=FAST_HASHER) as app:
            kind = ProtocolServer if transport == "asyncio" else TcpServer
            server = kind(app.node, HOST, 0, LIMITS)
            await server.serve(task_status=task_status)

    with start_blocking_portal("asyncio") as portal:
        future, port = portal.start_task(serve)
        yield port
        future.cancel()


@pytest.fixture(params=["anyio", "asyncio"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with serving(request.param) as port:
        yield port


@pytest.mark.parametrize("header", [v1, v2])
def test_each_proxied_address_has_its_own_connection_limit(port: int, header: object) -> None:
    assert callable(header)
    held = [Line(port, header("203.0.113.1")) for _ in range(LIMITS.connections_per_address)]
    for client in held:
        assert client.request({"msgid": 16})["errno"] == 0
    refused = Line(port, header("203.0.113.1"))
    reply = refused.recv()
    assert reply is not None and reply["errno"] == 9
    assert refused.closed_without_reply()
    # Every connection comes from 127.0.0.1: only the headers tell the clients apart.
    other = Line(port, header("203.0.113.2"))
    assert other.request({"msgid": 16})["errno"] == 0


def test_failed_logins_count_against_the_proxied_address(port: int) -> None:
    client = Line(port, v1("198.51.100.1"))
    user = client.request({"msgid": 4, "name": "target", "password": "right"})["id"]
    for _ in range(FAILED_LOGINS_PER_ADDRESS):
        assert client.request({"msgid": 1, "id": user, "password": "wrong"})["errno"] == 1
    assert client.request({"msgid": 1, "id": user, "password": "right"})["errno"] == 9
    elsewhere = Line(port, v1("198.51.100.2"))
    assert elsewhere.request({"msgid": 1, "id": user, "password": "right"})["errno"] == 0


def test_requests_in_the_same_packet_as_the_header_are_served(port: int) -> None:
    client = Line(port, v1("192.0.2.9") + b'{"msgid":16,"seq":1}\n{"msgid":16,"seq":2}\n')
    assert [client.recv(), client.recv()] == [
        {"msgid": 11, "seq": 1, "reply_to": 16, "errno": 0},
        {"msgid": 11, "seq": 2, "reply_to": 16, "errno": 0},
    ]


def test_a_connection_without_a_header_is_closed_unanswered(port: int) -> None:
    client = Line(port)
    client.send({"msgid": 16})
    assert client.closed_without_reply()


def test_a_connection_that_sends_nothing_is_closed_soon(port: int) -> None:
    client = Line(port)
    started = time.monotonic()
    assert client.closed_without_reply()
    assert time.monotonic() - started < LIMITS.proxy_header_seconds + 2


def test_a_header_that_never_ends_is_closed(port: int) -> None:
    client = Line(port, b"PROXY TCP4 " + b"1" * 200)
    assert client.closed_without_reply()


# --- the command line, and through nginx -----------------------------------------------------


@pytest.mark.parametrize("transport", ["anyio", "asyncio"])
def test_serve_proxy_protocol_logs_the_real_client(tmp_path: Path, transport: str) -> None:
    from tests.integration.conftest import ServerProcess

    server = ServerProcess(
        "memory://", tmp_path / "serve.log",
        ["--proxy-protocol", "--connections-per-address", "1", "--transport", transport],
    ).start()
    try:
        assert server.port is not None
        kept = Line(server.port, v1("203.0.113.77", 5555))
        assert kept.request({"msgid": 16})["errno"] == 0
        refused = Line(server.port, v2("203.0.113.77", 6666))
        reply = refused.recv()
        assert reply is not None and reply["errno"] == 9
        bare = Line(server.port)
        bare.send({"msgid": 16})
        assert bare.closed_without_reply()
    finally:
        server.stop()
    log = server.log_text()
    assert "refusing 203.0.113.77:6666: already 1 connections from there" in log
    assert "no PROXY protocol header" in log
    server.assert_no_traceback()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`chatserver cluster`: two nodes behind nginx, one connection allowed per address."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    env["CHATSERVER_CONNECTIONS_PER_ADDRESS"] = "1"  # the nodes inherit it
    log = (tmp_path / "cluster.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatserver", "cluster", "--host", HOST, "--port", str(port),
         "--node-port", str(free_port_block(2)), "--nodes", "2",
         "--database", f"sqlite:///{tmp_path / 'cluster.db'}",
         "--bus", f"redis://127.0.0.1:6379/0?namespace=test-{secrets.token_hex(4)}"],
        stdout=log, stderr=log, env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while "cluster listening" not in (tmp_path / "cluster.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "cluster.log").read_text()
            )
            time.sleep(0.1)
        yield port, tmp_path / "cluster.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
        text = (tmp_path / "cluster.log").read_text()
        assert "Traceback" not in text, text


def test_through_nginx_each_node_sees_the_real_client_address(
    cluster: tuple[int, Path],
) -> None:
    port, log = cluster
    # All of 127/8 is loopback: clients from 127.0.0.2 and 127.0.0.3 are different addresses.
    first = [Line(port, source="127.0.0.2") for _ in range(2)]  # one on each node
    for client in first:
        assert client.request({"msgid": 16})["errno"] == 0
    third = Line(port, source="127.0.0.2")  # whichever node gets it has one from there
    reply = third.recv()
    assert reply is not None and reply["errno"] == 9
    assert Line(port, source="127.0.0.3").request({"msgid": 16})["errno"] == 0
    assert "refusing 127.0.0.2:" in log.read_text()


# Issue 16.3: whose word on a client's address is believed.

ONLY_127_0_0_1 = ("127.0.0.1/32",)  # so that 127.0.0.2 is a peer that is not a trusted proxy


@contextmanager
def serving_trusting(transport: str, trusted: tuple[str, ...]) -> Iterator[int]:
    from attrs import evolve

    from chatserver.adapters.web.server import WebSocketServer

    limits = evolve(LIMITS, trusted_proxies=trusted)

    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as app:
            if transport == "websocket":
                web = WebSocketServer(app.node, HOST, 0, limits, forwarded_for=True)
                await web.serve(task_status=task_status)
            else:
                kind = ProtocolServer if transport == "asyncio" else TcpServer
                await kind(app.node, HOST, 0, limits).serve(task_status=task_status)

    with start_blocking_portal("asyncio") as portal:
        future, port = portal.start_task(serve)
        yield port
        future.cancel()


@pytest.mark.parametrize("transport", ["anyio", "asyncio"])
def test_a_proxy_header_from_a_peer_that_is_not_a_trusted_proxy_is_refused(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serving_trusting(transport, ONLY_127_0_0_1) as port:
        spoofer = Line(port, v1("198.51.100.7"), source="127.0.0.2")
        # The server may close on the header before the PING is even written.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            spoofer.send({"msgid": 16})
        assert spoofer.closed_without_reply()
        assert "not a trusted proxy" in caplog.text
        # The trusted proxy's header is believed, as before.
        proxied = Line(port, v1("198.51.100.8"))
        assert proxied.request({"msgid": 16})["errno"] == 0


def websocket(port: int, *, source: str, forwarded_for: str | None = None) -> "ClientConnection":
    from websockets.sync.client import connect

    sock = socket.create_connection((HOST, port), timeout=5, source_address=(source, 0))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    return connect(f"ws://{HOST}:{port}/ws", sock=sock, additional_headers=headers,
                   open_timeout=5, close_timeout=1).__enter__()


def ping(ws: "ClientConnection") -> int:
    ws.send(json.dumps({"msgid": 16}))
    return int(json.loads(ws.recv(timeout=5))["errno"])


def test_x_forwarded_for_from_an_untrusted_peer_is_refused_and_the_cap_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """532 WebSocket connections from one address passed a cap of 512 by naming a new
    X-Forwarded-For each, and spoofed addresses used up others' login budgets."""
    from websockets.exceptions import InvalidStatus

    with serving_trusting("websocket", ONLY_127_0_0_1) as port:
        for n in range(3):
            with pytest.raises(InvalidStatus) as refused:
                websocket(port, source="127.0.0.2", forwarded_for=f"203.0.113.{n}")
            assert refused.value.response.status_code == 403
        assert "X-Forwarded-For from a peer that is not a trusted proxy" in caplog.text
        # Without the header it is a client of its own, counted by its own address.
        held = [websocket(port, source="127.0.0.2") for _ in range(LIMITS.connections_per_address)]
        assert [ping(ws) for ws in held] == [0] * len(held)
        over = websocket(port, source="127.0.0.2")
        assert json.loads(over.recv(timeout=5))["errno"] == 9
        # From the trusted proxy, X-Forwarded-For names the client.
        proxied = [websocket(port, source="127.0.0.1", forwarded_for=f"203.0.113.{n}")
                   for n in range(3)]
        assert [ping(ws) for ws in proxied] == [0, 0, 0]


def test_the_cluster_keeps_its_nodes_on_loopback_and_trusts_only_nginx() -> None:
    from chatserver.entrypoints.local_cluster import LocalCluster

    cluster = LocalCluster(nodes=2, port=8000, database="sqlite:///x.db",
                           bus="redis://127.0.0.1:6379/0", host="0.0.0.0", ws_port=8080)
    command = cluster.node_command(1, 8001)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--trusted-proxy") + 1] == "127.0.0.1"
    assert "--proxy-protocol" in command


def test_a_trusted_proxy_that_is_not_an_address_is_a_configuration_error() -> None:
    from chatserver.entrypoints.bootstrap import ConfigError

    with pytest.raises(ConfigError, match=r"nginx\.local"):
        Config(proxy_protocol=True, trusted_proxies=("nginx.local",)).transport_limits()
    limits = Config(proxy_protocol=True, trusted_proxies=("10.0.0.0/8",)).transport_limits()
    assert limits.trusted_proxies == ("10.0.0.0/8",)
    assert Config(proxy_protocol=True).transport_limits().trusted_proxies == (
        "127.0.0.0/8", "::1/128")
