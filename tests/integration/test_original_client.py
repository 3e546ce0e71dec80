"""The original C++ client, as its reader thread behaves to the byte, against chatserver.

ORIGINAL.md, "Client" and "Framing on TCP": the client sends each request as JSON plus one NUL,
never PINGs, reads with one `recv(fd, buf, 1024)` into a zeroed 1,024-byte buffer and parses
that buffer as one JSON document with nlohmann::json 3.6.1, which ends the text at the first NUL
and throws on anything but whitespace after the document. A throw (a frame that does not fit in
one read, two frames in one read, a field it reads that is missing) ends the process, and so
does a closed connection. `OriginalClient` does exactly that in a thread, and keeps what the
client would have printed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import HOST, ClusterProcess, ServerProcess

pytestmark = pytest.mark.integration

RECV_SIZE = 1024  # the original client's buffer
LOGIN_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.5
PER_ADDRESS = 8


def original_time() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def original_bytes(obj: dict[str, Any]) -> bytes:
    """What the original server wrote for obj: nlohmann dump(), keys sorted, UTF-8 as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class OriginalClient:
    """One original client process: its reader thread runs from connect to exit."""

    def __init__(self, port: int, *, source: str = HOST, preamble: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.connect((HOST, port))
        self.sock.sendall(preamble)  # e.g. the PROXY header nginx would send a node
        self.shown: list[str] = []  # what it printed, line by line
        self.reads: list[bytes] = []  # every read, as the reader thread got it
        self.acks: list[dict[str, Any]] = []
        self.crash: str | None = None  # why it aborted
        self.exited = False  # recv returned 0: the process exits
        self.user_id: int | None = None
        self.name = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # The main thread: menus and commands.

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(original_bytes(obj) + b"\0")

    def register(self, name: str, password: str) -> int:
        acks = len(self.acks)
        self.send({"msgid": 4, "name": name, "password": password})
        ack = self._wait_ack(acks)
        assert ack["msgid"] == 5 and ack["errno"] == 0, ack
        return int(ack["id"])

    def login(self, user_id: int, password: str) -> dict[str, Any]:
        acks = len(self.acks)
        self.send({"msgid": 1, "id": user_id, "password": password})
        ack = self._wait_ack(acks)
        assert ack["msgid"] == 2 and ack["errno"] == 0, ack
        self.user_id, self.name = user_id, ack["name"]
        return ack

    def chat(self, toid: int, msg: str) -> None:
        self.send({"msgid": 6, "id": self.user_id, "name": self.name, "toid": toid, "msg": msg,
                   "time": original_time()})

    def loginout(self) -> None:
        self.send({"msgid": 3, "id": self.user_id})

    def _wait_ack(self, count: int, timeout: float = 15.0) -> dict[str, Any]:
        self._wait(lambda: len(self.acks) > count, timeout, "an ack")
        return self.acks[count]

    def wait_shown(self, text: str, timeout: float = 5.0) -> str:
        """The first line printed that contains text."""
        self._wait(lambda: any(text in line for line in self.shown), timeout, repr(text))
        return next(line for line in self.shown if text in line)

    def wait_exited(self, timeout: float = 5.0) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.exited or self.crash is not None, timeout)
        assert self.exited, f"still running after {timeout} s (crash: {self.crash})"

    def _wait(self, done: Any, timeout: float, what: str) -> None:
        with self._changed:
            self._changed.wait_for(lambda: done() or self.crash or self.exited, timeout)
            if done():
                return
        raise AssertionError(
            f"no {what} within {timeout} s: crash={self.crash!r} exited={self.exited}"
            f" shown={self.shown!r} reads={self.reads!r}"
        )

    def assert_running(self) -> None:
        assert self.crash is None, f"the client aborted: {self.crash}; reads={self.reads!r}"
        assert not self.exited, "the client exited: its connection was closed"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2)

    # The reader thread.

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError:
                data = b""
            with self._changed:
                if not data:
                    self.exited = True
                else:
                    self.reads.append(data)
                    try:
                        self._handle(data)
                    except Exception as error:  # nlohmann throws: the process aborts
                        self.crash = f"{type(error).__name__}: {error}"
                self._changed.notify_all()
                if self.exited or self.crash is not None:
                    return

    def _handle(self, data: bytes) -> None:
        if len(data) == RECV_SIZE:  # the buffer is full: the frame is cut, or has no end
            raise ValueError(f"a read of {RECV_SIZE} bytes does not fit the buffer")
        js = json.loads(data.split(b"\0")[0].decode())  # extra data after the object: throws
        msgid = js["msgid"]
        if msgid == 6:
            self.shown.append(f"{js['time']} [{js['id']}] {js['name']} said: {js['msg']}")
        elif msgid == 10:
            self.shown.append(
                f"群消息[{js['groupid']}]: {js['time']} [{js['id']}] {js['name']} said: {js['msg']}"
            )
        elif msgid == 2:
            if js["errno"] == 0:
                self.shown.append(f"current login user >> id: {js['id']} name: {js['name']}")
                for text in js.get("friends", []):
                    friend = json.loads(text)
                    self.shown.append(f"{friend['id']} {friend['name']} {friend['state']}")
                for text in js.get("offlinemsg", []):
                    self._handle(text.encode())
            else:
                self.shown.append(json.dumps(js["errmsg"]))
            self.acks.append(js)
        elif msgid == 5:
            self.acks.append(js)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One node with every silence limit short, and a small cap of connections per address."""
    directory = tmp_path_factory.mktemp("original")
    proc = ServerProcess(
        f"sqlite:///{directory / 'chat.db'}",
        directory / "server.log",
        ["--login-timeout", str(LOGIN_TIMEOUT), "--idle-timeout", str(IDLE_TIMEOUT),
         "--connections-per-address", str(PER_ADDRESS)],
    ).start()
    yield proc
    proc.stop()
    proc.assert_no_traceback()


@pytest.fixture
def clients(server: ServerProcess) -> Iterator[list[OriginalClient]]:
    made: list[OriginalClient] = []
    yield made
    for client in made:
        client.close()


def short_name() -> str:
    return f"o{uuid.uuid4().hex[:8]}"


def original(server: ServerProcess, clients: list[OriginalClient], *,
             source: str = HOST) -> OriginalClient:
    assert server.port is not None
    client = OriginalClient(server.port, source=source)
    clients.append(client)
    return client


def registered(server: ServerProcess, clients: list[OriginalClient],
               count: int) -> list[tuple[int, str, str]]:
    """count new users (id, name, password), registered as the original client does."""
    client = original(server, clients)
    users = []
    for _ in range(count):
        name = short_name()
        users.append((client.register(name, "pw"), name, "pw"))
    client.close()
    return users


# --------------------------------------------------------------------------- D2: frame sizes


def test_a_920_character_message_shows_in_the_original_client(server, clients) -> None:
    (alice_id, alice, _), (bob_id, _, _) = registered(server, clients, 2)
    sender, receiver = original(server, clients), original(server, clients)
    sender.login(alice_id, "pw")
    receiver.login(bob_id, "pw")
    text = "x" * 920
    sender.chat(bob_id, text)
    line = receiver.wait_shown(text)
    assert line.endswith(f"[{alice_id}] {alice} said: {text}")
    # exactly what the original server sent, which fits in one read
    (frame,) = [r for r in receiver.reads if text.encode() in r]
    sent = json.loads(frame)
    assert frame == original_bytes(sent) + b"\n"
    assert sorted(sent) == ["id", "msg", "msgid", "name", "time", "toid"]
    assert len(frame) < RECV_SIZE
    receiver.assert_running()


def test_a_chat_to_yourself_shows_in_the_original_client_as_the_original_sent_it(
    server, clients
) -> None:
    """The original server found toid, the sender's own id, in its map of connections and
    sent the chat there: back to the client, which printed it (docs/protocol.md, "A message
    to yourself")."""
    ((alice_id, alice, _),) = registered(server, clients, 1)
    client = original(server, clients)
    client.login(alice_id, "pw")
    client.chat(alice_id, "note to self")
    line = client.wait_shown("note to self")
    assert line.endswith(f"[{alice_id}] {alice} said: note to self")
    (frame,) = [r for r in client.reads if b"note to self" in r]
    sent = json.loads(frame)
    assert frame == original_bytes(sent) + b"\n"
    assert (sent["id"], sent["toid"]) == (alice_id, alice_id)
    client.assert_running()


def test_seven_short_waiting_messages_show_at_login_and_stay_shown(server, clients) -> None:
    (alice_id, alice, _), (bob_id, _, _) = registered(server, clients, 2)
    sender = original(server, clients)
    sender.login(alice_id, "pw")
    texts = [f"waiting message {i}" for i in range(1, 8)]
    for text in texts:
        sender.chat(bob_id, text)
    # LOGIN after the chats, on the same connection: its frames are handled in order, so all 7
    # are stored once the reply comes (another connection's LOGIN could overtake them)
    sender.login(alice_id, "pw")

    receiver = original(server, clients)
    ack = receiver.login(bob_id, "pw")
    assert [json.loads(m)["msg"] for m in ack["offlinemsg"]] == texts
    for text in texts:
        receiver.wait_shown(f"[{alice_id}] {alice} said: {text}")
    assert len(receiver.reads[0]) < RECV_SIZE
    for stored in ack["offlinemsg"]:
        assert sorted(json.loads(stored)) == ["id", "msg", "msgid", "name", "time", "toid"]
    receiver.assert_running()
    # shown, so gone from the store, as on the original server
    receiver.loginout()
    again = original(server, clients)
    assert "offlinemsg" not in again.login(bob_id, "pw")


def test_a_group_message_shows_with_the_original_fields(server, clients) -> None:
    (alice_id, alice, _), (bob_id, _, _) = registered(server, clients, 2)
    a, b = original(server, clients), original(server, clients)
    a.login(alice_id, "pw")
    b.login(bob_id, "pw")
    group = short_name()
    a.send({"msgid": 8, "id": alice_id, "groupname": group, "groupdesc": "d"})
    # the original client learns a group's id only by logging in again
    a.loginout()
    (listed,) = a.login(alice_id, "pw")["groups"]
    group_id = json.loads(listed)["id"]
    b.send({"msgid": 9, "id": bob_id, "groupid": group_id})
    b.loginout()
    b.login(bob_id, "pw")
    a.send({"msgid": 10, "id": alice_id, "name": alice, "groupid": group_id, "msg": "hi all",
            "time": original_time()})
    line = b.wait_shown("hi all")
    assert line.startswith(f"群消息[{group_id}]: ") and f"[{alice_id}] {alice}" in line
    frame = next(r for r in b.reads if b"hi all" in r)
    assert sorted(json.loads(frame)) == ["groupid", "id", "msg", "msgid", "name", "time"]


# --------------------------------------------------------------------------- D3: silence


def test_the_original_client_left_idle_past_every_timeout_still_chats(server, clients) -> None:
    (alice_id, alice, _), (bob_id, _, _) = registered(server, clients, 2)
    waits = 2 * max(LOGIN_TIMEOUT, IDLE_TIMEOUT) + 1
    # at the menu, before logging in: nothing sent at all
    sender, receiver = original(server, clients), original(server, clients)
    time.sleep(waits)
    sender.assert_running()
    receiver.assert_running()
    sender.login(alice_id, "pw")
    receiver.login(bob_id, "pw")
    # logged in, silent, while messages arrive
    time.sleep(waits / 2)
    sender.chat(bob_id, "while you only read")
    receiver.wait_shown("while you only read")
    time.sleep(waits / 2)
    receiver.assert_running()
    sender.assert_running()
    # back at the menu after LOGINOUT, then silent again
    receiver.loginout()
    time.sleep(waits)
    receiver.assert_running()
    receiver.login(bob_id, "pw")
    sender.chat(bob_id, "still here")
    line = receiver.wait_shown("still here")
    assert f"[{alice_id}] {alice} said: still here" in line
    receiver.assert_running()
    sender.assert_running()


def test_accepted_connections_have_tcp_keepalive_on(server, clients) -> None:
    """Dead peers of silent connections are found by TCP keepalive: the server's side of an
    idle connection runs the keepalive timer (/proc/net/tcp timer 2)."""
    client = original(server, clients)
    client_port = client.sock.getsockname()[1]
    time.sleep(0.2)
    assert server.port is not None
    timers = [
        fields[5].split(":")[0]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1].endswith(f":{server.port:04X}") and fields[2].endswith(f":{client_port:04X}")
    ]
    assert timers == ["02"], timers


def test_silent_connections_are_still_capped_per_address(server, clients) -> None:
    """The abuse: one address holds connections that never send a byte. They are not closed for
    silence (an original client at its menu looks the same), so the cap per address is what
    bounds them; a user elsewhere is served as usual meanwhile."""
    flooder = "127.0.0.3"
    held = [original(server, clients, source=flooder) for _ in range(PER_ADDRESS)]
    time.sleep(LOGIN_TIMEOUT + 1)
    refused = original(server, clients, source=flooder)
    refused.wait_exited()
    assert b'"errno":9' in refused.reads[0]
    for client in held:
        client.assert_running()

    (alice_id, _, _), (bob_id, _, _) = registered(server, clients, 2)
    sender = original(server, clients, source="127.0.0.2")
    receiver = original(server, clients, source="127.0.0.2")
    sender.login(alice_id, "pw")
    receiver.login(bob_id, "pw")
    started = time.monotonic()
    sender.chat(bob_id, "served beside the flood")
    receiver.wait_shown("served beside the flood")
    latency = time.monotonic() - started
    print(f"chat latency beside {PER_ADDRESS} silent connections from one address: "
          f"{latency * 1000:.1f} ms")
    assert latency < 1.0

    held.pop().close()  # one leaves: its place is free again
    time.sleep(0.3)
    original(server, clients, source=flooder).assert_running()


def test_a_modern_connection_that_spoke_but_never_logs_in_is_still_closed(server) -> None:
    assert server.port is not None
    with socket.create_connection((HOST, server.port)) as sock:
        sock.sendall(b'{"msgid":16}\n')
        sock.settimeout(LOGIN_TIMEOUT + 3)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert re.match(rb'\{"msgid":11,"reply_to":16,"errno":0', received), received


# --------------------------------------------------------------------------- D4: takeover


def test_a_taken_over_original_client_is_disconnected(server, clients) -> None:
    (alice_id, _, _), (bob_id, bob, _) = registered(server, clients, 2)
    friend = original(server, clients)
    friend.login(alice_id, "pw")
    first = original(server, clients)
    first.login(bob_id, "pw")
    second = original(server, clients)
    second.login(bob_id, "pw")
    first.wait_exited()  # as on any closed connection, the original client exits
    assert first.crash is None
    second.chat(alice_id, "from the new login")
    friend.wait_shown(f"[{bob_id}] {bob} said: from the new login")
    friend.chat(bob_id, "to the new login")
    second.wait_shown("to the new login")
    second.assert_running()


# --------------------------------------------------------------------------- D6: cluster start


def test_a_cluster_start_logs_no_missing_proxy_header(tmp_path: Path) -> None:
    """Also in a cluster: a takeover from another node closes the original client."""
    cluster = ClusterProcess(tmp_path, tmp_path / "cluster.log").start()
    made: list[OriginalClient] = []
    try:
        assert cluster.port is not None
        alice = OriginalClient(cluster.port)  # through nginx
        # bob's two logins straight to node 1, then node 2, as nginx would pass them on
        first, second = (
            OriginalClient(port, preamble=b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 %d\r\n" % port)
            for port in (cluster.node_port, cluster.node_port + 1)
        )
        made += [alice, first, second]
        alice_id, bob_id = alice.register(short_name(), "pw"), alice.register(short_name(), "pw")
        alice.login(alice_id, "pw")
        first.login(bob_id, "pw")
        time.sleep(6)  # past the 5 s a node waits for a PROXY header
        first.assert_running()
        second.login(bob_id, "pw")
        first.wait_exited()
        alice.chat(bob_id, "to the login that took over")
        second.wait_shown("to the login that took over")
    finally:
        for client in made:
            client.close()
        cluster.stop()
    log = cluster.log_text()
    assert "cluster listening" in log
    assert "PROXY header" not in log, log
    cluster.assert_no_traceback()
