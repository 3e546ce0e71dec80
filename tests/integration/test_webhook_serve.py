"""`chatserver serve --webhook`: the command line's webhook, durable across a SIGKILL. The
receiver is down while messages are sent, the node is killed (no clean stop) and started again
on the same database; once the receiver is up, every event arrives, signed."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from chatserver.adapters.webhook import verify
from tests.integration.conftest import Chat, ServerProcess, free_port

pytestmark = pytest.mark.integration

SECRET = "serve test secret"


class Posts(http.server.BaseHTTPRequestHandler):
    """Keeps every POST's body and signature header; answers 204."""

    kept: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.kept.append((body, self.headers.get("X-Chatserver-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_webhook_events_survive_a_killed_node_and_arrive_once_the_receiver_is_up(
    tmp_path: Path,
) -> None:
    receiver_port = free_port()  # down: nothing listens there yet
    args = ["--webhook", f"http://127.0.0.1:{receiver_port}/events", "--webhook-secret", SECRET]
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "serve.log", args)
    server.start()
    chat = Chat(server)
    alice, bob = chat.users(2)
    sender = chat.online(alice)
    msg_ids = [
        sender.ok({"msgid": 6, "toid": bob.id, "msg": f"kept {n}"})["msg_id"] for n in range(50)
    ]
    server.kill()
    chat.close_all()
    server.start()  # the same database: the outbox is still there

    Posts.kept = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", receiver_port), Posts)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        arrived: list[int] = []
        while time.monotonic() < deadline:
            bodies = [json.loads(body) for body, _ in list(Posts.kept)]
            arrived = [b["data"]["msg_id"] for b in bodies if b["type"] == "direct"]
            if set(msg_ids) <= set(arrived):
                break
            time.sleep(0.1)
        assert set(msg_ids) <= set(arrived), f"{len(set(arrived))} of {len(msg_ids)} arrived"
        first_seen = list(dict.fromkeys(arrived))
        assert first_seen == msg_ids  # in order: one conversation
        names = {b["data"]["name"] for b in bodies if b["type"] == "account_created"}
        assert names == {alice.name, bob.name}
        assert all(verify(SECRET, body, signature) for body, signature in Posts.kept)
    finally:
        receiver.shutdown()
        server.stop()
    server.assert_no_traceback()


def test_a_webhook_without_a_secret_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatserver",
            "serve",
            "--port",
            "0",
            "--database",
            f"sqlite:///{tmp_path / 'chat.db'}",
            "--webhook",
            "http://127.0.0.1:9/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "chatserver: --webhook needs a secret to sign with: set CHATSERVER_WEBHOOK_SECRET "
        "(or --webhook-secret)"
    ]
