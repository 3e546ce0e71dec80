"""Many frames arriving in one read are all served, in order, and the connection is read
after them: the asyncio transport stops reading past 256 queued frames and must start again
once it has served them."""

import json
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, ServerProcess

pytestmark = pytest.mark.integration


def read_replies(sock: socket.socket, count: int) -> list[dict[str, object]]:
    buffer = b""
    while buffer.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    return [json.loads(line) for line in buffer.split(b"\n")[:count]]


@pytest.mark.parametrize("frames", [300, 2000])
def test_a_read_of_many_frames_is_served_and_reading_goes_on(tmp_path: Path, frames: int) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log",
        ["--request-burst", "100000", "--request-rate", "100000"],
    ).start()
    try:
        assert server.port is not None
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(b"".join(b'{"msgid":16,"seq":%d}\n' % n for n in range(frames)))
            replies = read_replies(sock, frames)
            assert [r.get("seq") for r in replies] == list(range(frames))
            assert all(r["msgid"] == 11 and r["errno"] == 0 for r in replies)
            sock.sendall(b'{"msgid":16,"seq":-1}\n')  # still read after that
            assert read_replies(sock, 1)[0]["seq"] == -1
    finally:
        server.stop()
        server.assert_no_traceback()
