"""TCP and WebSocket clients of one server are one population: they chat, see each other's
presence, take over each other's sessions; and the page is served beside /ws."""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    HOST,
    Chat,
    Client,
    ClusterProcess,
    ServerProcess,
    WebSocketTestClient,
    free_port,
)

pytestmark = pytest.mark.integration


class MixedChat(Chat):
    """Chat whose clients are TCP or WebSocket, as each test asks."""

    def __init__(self, server: ServerProcess, ws_port: int):
        super().__init__(server)
        self.ws_port = ws_port

    def over(self, transport: str) -> Client:
        c = WebSocketTestClient(self.ws_port) if transport == "ws" else Client(self.port)
        self.clients.append(c)
        return c


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    directory = tmp_path_factory.mktemp("mixed")
    ws_port = free_port()
    server = ServerProcess(
        f"sqlite:///{directory / 'chat.db'}", directory / "server.log",
        extra_args=["--ws-port", str(ws_port)],
    ).start()
    yield server, ws_port
    server.stop()


@pytest.fixture
def mixed(mixed_server: tuple[ServerProcess, int]) -> Iterator[MixedChat]:
    chat = MixedChat(*mixed_server)
    yield chat
    chat.close_all()


def online_over(chat: MixedChat, transport: str, user, **login) -> Client:  # type: ignore[no-untyped-def]
    c = chat.over(transport)
    c.login(user, **login)
    return c


@pytest.mark.parametrize(("a_over", "b_over"), [("tcp", "ws"), ("ws", "tcp"), ("ws", "ws")])
def test_chat_presence_and_friends_cross_transports(mixed: MixedChat, a_over: str,
                                                    b_over: str) -> None:
    alice, bob = mixed.users(2)
    ca = online_over(mixed, a_over, alice)
    cb = online_over(mixed, b_over, bob)
    mixed.befriend(ca, cb)
    sent = ca.ok({"msgid": 6, "toid": bob.id, "msg": "你好 \"bob\" 😀 <b>\\"})
    got = cb.expect({"msgid": 6, "id": alice.id})
    assert got["msg"] == "你好 \"bob\" 😀 <b>\\" and got["msg_id"] == sent["msg_id"]
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "hi alice"})
    assert ca.expect({"msgid": 6, "id": bob.id})["msg"] == "hi alice"
    gid, _ = mixed.make_group(ca, cb)
    ca.ok({"msgid": 10, "groupid": gid, "msg": "to the group"})
    assert cb.expect({"msgid": 10, "groupid": gid})["msg"] == "to the group"
    cb.logout()
    assert ca.expect({"msgid": 14, "id": bob.id})["state"] == "offline"


def test_a_login_over_websocket_takes_over_a_tcp_session_and_back(mixed: MixedChat) -> None:
    alice, bob = mixed.users(2)
    tcp = online_over(mixed, "tcp", alice, receipts=True)
    peer = online_over(mixed, "tcp", bob)
    sent = peer.ok({"msgid": 6, "toid": alice.id, "msg": "unreceipted"})
    tcp.expect({"msgid": 6, "msg_id": sent["msg_id"]})
    ws = mixed.over("ws")
    ack = ws.login(alice, receipts=True)
    tcp.expect({"msgid": 15})  # KICKED
    # What the kicked TCP session had not receipted comes with the WebSocket login.
    assert sent["msg_id"] in [m["msg_id"] for m in ack["offlinemsg"]]
    ws.ok({"msgid": 19, "msg_ids": [sent["msg_id"]]})
    tcp2 = online_over(mixed, "tcp", alice)
    ws.expect({"msgid": 15})
    peer.ok({"msgid": 6, "toid": alice.id, "msg": "now on tcp"})
    assert tcp2.expect({"msgid": 6, "id": bob.id})["msg"] == "now on tcp"
    peer.assert_silent(pattern={"msgid": 14})  # a takeover is no presence change


def test_messages_stored_for_a_websocket_user_wait_for_the_next_login(mixed: MixedChat) -> None:
    alice, bob = mixed.users(2)
    ca = online_over(mixed, "tcp", alice)
    accepted = [ca.ok({"msgid": 6, "toid": bob.id, "msg": f"m{i}"})["msg_id"] for i in range(3)]
    cb = online_over(mixed, "ws", bob)
    assert cb.ack is not None
    assert [m["msg_id"] for m in cb.ack["offlinemsg"]] == accepted


def test_the_page_is_served_beside_the_websocket(mixed: MixedChat) -> None:
    conn = http.client.HTTPConnection(HOST, mixed.ws_port, timeout=5)
    conn.request("GET", "/")
    page = conn.getresponse()
    body = page.read()
    assert page.status == 200, body[:200]
    assert page.getheader("Content-Type", "").startswith("text/html")
    assert "default-src 'self'" in page.getheader("Content-Security-Policy", "")
    assert b"<html" in body.lower()
    conn.close()
    conn = http.client.HTTPConnection(HOST, mixed.ws_port, timeout=5)
    conn.request("GET", "/../../etc/passwd")
    missing = conn.getresponse()
    assert missing.status == 404
    conn.close()


def test_sigterm_logs_websocket_users_out_and_closes_going_away(tmp_path: Path) -> None:
    ws_port = free_port()
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log",
        extra_args=["--ws-port", str(ws_port)],
    ).start()
    try:
        chat = MixedChat(server, ws_port)
        alice, bob = chat.users(2)
        ca = online_over(chat, "tcp", alice)
        cb = online_over(chat, "ws", bob)
        chat.befriend(ca, cb)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        cb.expect_closed(timeout=10)
        ca.expect_closed(timeout=10)
        assert isinstance(cb, WebSocketTestClient)
        assert cb.ws.close_code == 1001  # going away
        assert server.proc.wait(15) == 0
        server.assert_no_traceback()
        log = server.log_text()
        assert f"session end user={bob.id} reason='server stopping'" in log
        chat.close_all()
    finally:
        server.stop()


def test_behind_a_proxy_limits_per_address_use_x_forwarded_for(tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ws_port = free_port()
    server = ServerProcess(
        "memory://", tmp_path / "server.log",
        extra_args=["--ws-port", str(ws_port), "--proxy-protocol",
                    "--connections-per-address", "2"],
    ).start()

    def through_proxy(client: str):  # type: ignore[no-untyped-def]
        return connect(
            f"ws://{HOST}:{ws_port}/ws", open_timeout=5, close_timeout=1,
            additional_headers={"X-Forwarded-For": f"10.9.9.9, {client}"},
        ).__enter__()

    try:
        held = [through_proxy("192.0.2.1") for _ in range(2)]
        for ws in held:
            ws.send('{"msgid":16}')
            assert '"errno":0' in ws.recv(timeout=5)
        refused = through_proxy("192.0.2.1")
        assert '"errno":9' in refused.recv(timeout=5)
        with pytest.raises(ConnectionClosed):
            refused.recv(timeout=5)
        other = through_proxy("192.0.2.2")  # another client of the same proxy is let in
        other.send('{"msgid":16}')
        assert '"errno":0' in other.recv(timeout=5)
        for ws in [*held, other]:
            ws.close()
    finally:
        server.stop()
        server.assert_no_traceback()


def test_websocket_users_on_different_nodes_of_a_cluster_chat(tmp_path: Path) -> None:
    cluster = ClusterProcess(tmp_path, tmp_path / "cluster.log", web=True).start()
    try:
        assert cluster.ws_port is not None
        chat = MixedChat(cluster, cluster.ws_port)
        alice, bob, carol, dave = chat.users(4)
        # Alice and bob straight to the web ports of node 1 and node 2; carol over WebSocket
        # and dave over TCP, both through nginx.
        web_ports = [cluster.node_port + cluster.nodes + i for i in range(2)]
        ca, cb = (WebSocketTestClient(port) for port in web_ports)
        chat.clients += [ca, cb]
        ca.login(alice)
        cb.login(bob)
        cc = online_over(chat, "ws", carol)
        cd = online_over(chat, "tcp", dave)
        chat.befriend(ca, cb)
        ca.ok({"msgid": 6, "toid": bob.id, "msg": "across nodes"})
        assert cb.expect({"msgid": 6, "id": alice.id})["msg"] == "across nodes"
        cc.ok({"msgid": 6, "toid": alice.id, "msg": "through nginx"})
        assert ca.expect({"msgid": 6, "id": carol.id})["msg"] == "through nginx"
        cd.ok({"msgid": 6, "toid": carol.id, "msg": "from tcp"})
        assert cc.expect({"msgid": 6, "id": dave.id})["msg"] == "from tcp"
        cb.logout()
        assert ca.expect({"msgid": 14, "id": bob.id})["state"] == "offline"
        chat.close_all()
    finally:
        cluster.stop()


def test_connections_per_address_count_tcp_and_websocket_together(tmp_path: Path) -> None:
    ws_port = free_port()
    server = ServerProcess(
        "memory://", tmp_path / "server.log",
        extra_args=["--ws-port", str(ws_port), "--connections-per-address", "3"],
    ).start()
    assert server.port is not None
    held: list[Client] = []
    # The start-up probes (a connection to each port, closed at once) count until the server
    # has seen them close: connections count from the moment they are accepted.
    time.sleep(0.3)
    try:
        held = [Client(server.port), Client(server.port), WebSocketTestClient(ws_port)]
        for client in held:
            assert client.request({"msgid": 16})["errno"] == 0
        for refused in (Client(server.port), WebSocketTestClient(ws_port)):
            held.append(refused)
            assert refused.recv()["errno"] == 9
            refused.expect_closed()
        held.pop(0).close()  # one TCP connection less: a WebSocket one may come in
        for _ in range(50):
            late = WebSocketTestClient(ws_port)
            held.append(late)
            try:
                if late.request({"msgid": 16})["errno"] == 0:
                    break
            except BrokenPipeError:
                pass  # counted when accepted, it may be refused and closed before the PING
            time.sleep(0.05)  # the server has yet to see the close
        else:
            raise AssertionError("no room after a connection closed")
    finally:
        for client in held:
            client.close()
        server.stop()
        server.assert_no_traceback()
