"""SIGTERM while a request waits on the database: it is finished and answered before the server
logs its session out; requests read but not started get errno 11. Both transports."""

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Chat, ServerProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["anyio", "asyncio"])
def test_a_request_waiting_on_the_database_is_answered_before_the_server_stops(
    tmp_path: Path, transport: str
) -> None:
    db = tmp_path / "chat.db"
    server = ServerProcess(
        f"sqlite:///{db}", tmp_path / "stop.log", ["--transport", transport]
    ).start()
    chat = Chat(server)
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "before"})  # message ids are reserved by now

    # Another process holds SQLite's write lock: storing for bob (away) has to wait for it.
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        # Chats are pipelined (both wait for the commit); the PING waits for them to be
        # answered before it is served; the chat after it is read but not started.
        first, also, ping, second = (ca.next_seq() for _ in range(4))
        ca.send_raw(
            f'{{"msgid":6,"toid":{bob.id},"msg":"in flight","seq":{first}}}\n'
            f'{{"msgid":6,"toid":{bob.id},"msg":"also in flight","seq":{also}}}\n'
            f'{{"msgid":16,"seq":{ping}}}\n'
            f'{{"msgid":6,"toid":{bob.id},"msg":"not started","seq":{second}}}\n'.encode()
        )
        time.sleep(0.5)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # the server waits for the request instead of logging alice out
        assert server.running
        assert f"session end user={alice.id}" not in server.log_text()
    finally:
        lock.execute("COMMIT")
        lock.close()

    in_flight = ca.expect({"msgid": 11, "seq": first})
    assert in_flight["errno"] == 0 and in_flight["msg_id"] > 0
    also_in_flight = ca.expect({"msgid": 11, "seq": also})
    assert also_in_flight["errno"] == 0 and also_in_flight["pos"] == in_flight["pos"] + 1
    assert ca.expect({"seq": ping})["errno"] == 0
    not_started = ca.expect({"msgid": 11, "seq": second})
    assert not_started["errno"] == 11 and "stopping" in not_started["errmsg"]
    assert server.proc.wait(timeout=15) == 0
    assert f"session end user={alice.id} reason='server stopping'" in server.log_text()
    chat.close_all()

    restarted = Chat(server.start())
    try:
        ack = restarted.online(bob).ack
        assert ack is not None
        assert [m["msg"] for m in ack["offlinemsg"]] == ["before", "in flight", "also in flight"]
        assert ack["offlinemsg"][1]["msg_id"] == in_flight["msg_id"]
    finally:
        restarted.close_all()
        server.stop()
        server.assert_no_traceback()
