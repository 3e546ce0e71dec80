"""One client opening a thousand connections cannot take the server from anyone else."""

import json
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess

pytestmark = pytest.mark.integration

PER_ADDRESS = 512  # the documented default


def test_a_thousand_connections_from_one_address(tmp_path: Path) -> None:
    server = ServerProcess("memory://", tmp_path / "abuse.log").start()
    assert server.port is not None
    chat = Chat(server)
    alice, bob = chat.users(2)  # connected before the flood
    ca, cb = chat.online(alice), chat.online(bob)
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(1000):
            sock = socket.create_connection((HOST, server.port), timeout=5)
            held.append(sock)
        for sock in held[PER_ADDRESS:]:  # the ones over the limit are told, and closed
            data = sock.recv(4096)
            if data and json.loads(data.split(b"\n")[0])["errno"] == 9:
                refused += 1
        assert refused >= 1000 - PER_ADDRESS - 2  # the two users above hold two of the 512
        # Those already in are served as before.
        sent = ca.ok({"msgid": 6, "toid": bob.id, "msg": "still here"})["msg_id"]
        cb.expect({"msgid": 6, "msg_id": sent})
    finally:
        for sock in held:
            sock.close()
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_the_limit_of_waiting_messages_is_set_by_stored_limit(tmp_path: Path) -> None:
    """(changed in version 2) The inbox keeps everything and no sender is refused: the stored
    limit bounds what a login pushes to a device that fell behind (the newest of it); SYNC
    reads the rest."""
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log", ["--stored-limit", "2"]
    ).start()
    chat = Chat(server)
    try:
        alice, bob = chat.users(2)
        ca = chat.online(alice)
        for n in range(3):
            ca.ok({"msgid": 6, "toid": bob.id, "msg": f"waits {n}"})
        cb = chat.client()
        login = cb.login(bob)
        assert [m["msg"] for m in login["offlinemsg"]] == ["waits 1", "waits 2"]
        synced = cb.ok({"msgid": 20, "since": 0})
        assert [m["msg"] for m in synced["msgs"]] == ["waits 0", "waits 1", "waits 2"]
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()
