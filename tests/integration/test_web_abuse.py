"""Abuse of the web listener, performed: another site's page opening /ws (issue 16.11), and
HSTS with TLS (issue 16.12). In-process servers on loopback."""

import json
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.web.server import WebSocketServer
from chatserver.entrypoints.bootstrap import Config, bootstrap
from tests.integration.conftest import HOST
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.integration


@contextmanager
def web(allowed_origins: tuple[str, ...] = (), tls: ssl.SSLContext | None = None
        ) -> Iterator[int]:
    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as app:
            server = WebSocketServer(app.node, HOST, 0, TransportLimits(), tls=tls,
                                     allowed_origins=allowed_origins)
            await server.serve(task_status=task_status)

    with start_blocking_portal("asyncio") as portal:
        future, port = portal.start_task(serve)
        yield port
        future.cancel()


def opened(port: int, origin: str | None) -> ClientConnection:
    return connect(f"ws://{HOST}:{port}/ws", origin=origin,  # type: ignore[arg-type]
                   open_timeout=5, close_timeout=1).__enter__()


def ping(ws: ClientConnection) -> int:
    ws.send(json.dumps({"msgid": 16}))
    return int(json.loads(ws.recv(timeout=5))["errno"])


def test_another_sites_page_cannot_open_the_websocket(caplog: pytest.LogCaptureFixture) -> None:
    with web() as port:
        for origin in ("http://evil.example", f"http://{HOST}:{port + 1}", "null"):
            with pytest.raises(InvalidStatus) as refused:
                opened(port, origin)
            assert refused.value.response.status_code == 403
        assert "refusing" in caplog.text and "evil.example" in caplog.text
        # The page's own origin, and clients that are not browsers (no Origin), are served.
        assert ping(opened(port, f"http://{HOST}:{port}")) == 0
        assert ping(opened(port, None)) == 0


def test_allowed_origins_are_listed_by_the_operator() -> None:
    with web(allowed_origins=("https://chat.example.com",)) as port:
        assert ping(opened(port, "https://chat.example.com")) == 0
        with pytest.raises(InvalidStatus):
            opened(port, f"http://{HOST}:{port}")
        assert ping(opened(port, None)) == 0
    with web(allowed_origins=("*",)) as port:
        assert ping(opened(port, "http://anything.example")) == 0


def test_the_page_over_tls_tells_browsers_to_stay_on_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    client_context.check_hostname = False
    with web(tls=server_context) as port, urllib.request.urlopen(
        f"https://{HOST}:{port}/", context=client_context, timeout=5
    ) as response:
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    with web() as port, urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as response:
        assert response.headers["Strict-Transport-Security"] is None


def test_a_websocket_client_resending_what_a_limit_refused_is_cut_off() -> None:
    """Issue 16.1 over WebSocket: requests refused by a limit (errno 9: here REG past the
    address's registrations a minute) count against the connection as on TCP; the 50th past
    the limit closes it, and a bystander keeps its service."""
    with web() as port:
        flooder, bystander = opened(port, None), opened(port, None)
        for n in range(300):
            flooder.send(json.dumps({"msgid": 4, "name": f"flood{n}", "password": "x"}))
        answers: list[int] = []
        with pytest.raises(ConnectionClosed):
            while True:
                answers.append(int(json.loads(flooder.recv(timeout=5)).get("errno", 0)))
        started = time.perf_counter()
        assert ping(bystander) == 0
        print(f"\nflooder answered {len(answers)} of 300 REG ({answers.count(9)} errno 9) "
              f"before it was closed; the bystander's PING took "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")
        refused = answers.count(9)
        assert 0 < refused <= 52 and len(answers) < 300


def test_malformed_http_requests_are_one_line_each_within_a_budget_not_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """QA: a PUT with a broken chunked body (any client can send one) was logged by aiohttp
    at ERROR with a 15-line traceback, per request. Now: one line, within the refusal log's
    budget, and the web port goes on serving."""
    import logging
    import socket

    caplog.set_level(logging.INFO)
    with web() as port:
        started = time.perf_counter()
        for _ in range(200):
            with socket.create_connection((HOST, port), timeout=5) as sock:
                sock.sendall(b"PUT /files/upload/1?e=1&s=x HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\nhello\r\n")
                assert b" 400 " in sock.recv(1024).split(b"\r\n")[0]
        took = time.perf_counter() - started
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as page:
            assert page.status == 200
    records = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()
               or r.name == "chatserver.web.aiohttp"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    # The refusal lines' budget (a burst of 50, then 10 a second) is the process's, and a
    # bucket that ran dry long ago refills to a full burst at once: up to two bursts here.
    assert len(records) <= 2 * 50 + 10 * (took + 1), len(records)
    assert all(r.name == "chatserver.web" for r in records)
    print(f"200 malformed requests in {took:.2f} s: {len(records)} log lines; the page after "
          "them was served")
