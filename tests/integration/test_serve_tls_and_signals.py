"""`serve` over TLS, and how it stops on SIGTERM."""

import http.client
import json
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_a_client_chats_over_tls(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = ServerProcess(
        "memory://", tmp_path / "tls.log", ["--tls-cert", str(cert), "--tls-key", str(key)]
    ).start()
    try:
        assert server.port is not None
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection((HOST, server.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b'{"msgid":4,"name":"tls-user","password":"pw","seq":1}\n')
            reply = json.loads(_read_line(tls))
            assert reply["errno"] == 0 and reply["seq"] == 1
            tls.sendall(f'{{"msgid":1,"id":{reply["id"]},"password":"pw"}}\n'.encode())
            assert json.loads(_read_line(tls))["errno"] == 0
        # A client that does not speak TLS is turned away without harm to the server.
        with socket.create_connection((HOST, server.port), timeout=10) as plain:
            plain.sendall(b'{"msgid":16}\n')
            plain.settimeout(5)
            assert b"errno" not in plain.recv(4096)
    finally:
        server.stop()
        server.assert_no_traceback()


def test_the_web_port_serves_https_and_wss_with_the_same_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    from websockets.sync.client import connect

    cert, key = certificate
    ws_port = free_port()
    server = ServerProcess(
        "memory://", tmp_path / "wss.log",
        ["--tls-cert", str(cert), "--tls-key", str(key), "--ws-port", str(ws_port)],
    ).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with connect(f"wss://localhost:{ws_port}/ws", ssl=context, open_timeout=10) as ws:
            ws.send('{"msgid":4,"name":"wss-user","password":"pw","seq":1}')
            reply = json.loads(ws.recv(timeout=10))
            assert reply["errno"] == 0 and reply["seq"] == 1
        page = http.client.HTTPSConnection("localhost", ws_port, timeout=10, context=context)
        page.request("GET", "/")
        assert page.getresponse().status == 200
        page.close()
    finally:
        server.stop()
        server.assert_no_traceback()


def _read_line(stream: ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = stream.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    return data


def test_sigterm_logs_everyone_out_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "stop.log").start()
    chat = Chat(server)
    alice, bob = chat.users(2)
    ca, cb = chat.online(alice), chat.online(bob, receipts=True)
    chat.befriend(ca, cb)
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "never receipted"})
    unreceipted = cb.expect({"msgid": 6, "msg": "never receipted"})["pos"]
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    log = server.log_text()
    # bob's device keeps its mark below what it never receipted: its next login brings it
    assert (f"session end user={bob.id} reason='server stopping' device='default' "
            f"mark={unreceipted - 1}\n") in log
    chat.close_all()
    restarted = Chat(server.start())
    try:
        back = restarted.online(bob, receipts=True)
        assert [m["msg"] for m in back.ack["offlinemsg"]] == ["never receipted"]
    finally:
        restarted.close_all()
        server.stop()
        server.assert_no_traceback()


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    server = ServerProcess("memory://", tmp_path / "twice.log").start()
    chat = Chat(server)
    chat.online(chat.user())  # a session to log out
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    # Whether the second signal came during the clean stop or after it: out at once, cleanly
    # or by the signal itself, never hanging on.
    assert server.proc.wait(timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
    chat.close_all()
    server.assert_no_traceback()
