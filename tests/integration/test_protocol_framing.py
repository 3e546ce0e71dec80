"""Framing (PROTOCOL.md "Framing" and the bad-frame rules of "Envelope"), over raw TCP."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

pytestmark = pytest.mark.integration

LIMIT = 65_536  # the default frame limit, terminator not counted
PING = 16


def padded_ping(size: int, seq: int) -> bytes:
    """A PING of exactly `size` bytes (no terminator), padded by an unknown field."""
    head = b'{"msgid":16,"seq":%d,"pad":"' % seq
    tail = b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    json.loads(body)
    return body


def ping_bytes(seq: int, end: bytes = b"\n") -> bytes:
    return b'{"msgid":16,"seq":%d}' % seq + end


def assert_pong(frame: dict, seq: int) -> None:
    assert frame["msgid"] == 11, frame
    assert frame["reply_to"] == 16 and frame["errno"] == 0 and frame["seq"] == seq, frame


def assert_bad_frame_reply(frame: dict, errno: int = 7) -> None:
    assert frame["msgid"] == 11, frame
    assert frame["reply_to"] == 0, frame
    assert frame["errno"] == errno, frame


# --------------------------------------------------------------------------- terminators


def test_lf_terminated_frame_is_answered(chat):
    c = chat.client()
    c.send_raw(ping_bytes(1))
    assert_pong(c.recv(), 1)


def test_nul_terminated_frame_is_answered_on_a_modern_connection(chat):
    c = chat.client()
    c.send_raw(ping_bytes(1))
    assert_pong(c.recv(), 1)
    c.send_raw(ping_bytes(2, b"\0"))
    assert_pong(c.recv(), 2)


def test_nul_terminated_register_is_answered(chat):
    c = chat.client(legacy=True)
    c.send({"msgid": 4, "name": f"nul{time.time_ns()}", "password": "x"})
    reply = c.expect({"msgid": 5})
    assert reply["errno"] == 0 and reply["id"] > 0, reply


def test_lf_terminated_frames_are_accepted_on_a_legacy_connection(chat):
    c = chat.client(legacy=True)
    reply = c.request({"msgid": 4, "name": f"lg{time.time_ns()}", "password": "pw"})
    assert reply["errno"] == 0, reply
    c.send({"msgid": 4, "name": f"lf{time.time_ns()}", "password": "pw"}, terminator=b"\n")
    reply = c.expect({"msgid": 5})
    assert reply["errno"] == 0, reply


def test_cr_before_lf_is_ignored(chat):
    c = chat.client()
    c.send_raw(b'{"msgid":16,"seq":1}\r\n')
    assert_pong(c.recv(), 1)
    c.send_raw(b"\r\n")  # an empty frame once the CR is dropped
    c.send_raw(ping_bytes(2))
    assert_pong(c.recv(), 2)
    c.assert_silent()


def test_cr_before_lf_does_not_count_towards_the_frame_limit(chat):
    c = chat.client()
    c.send_raw(padded_ping(LIMIT, 3) + b"\r\n")
    assert_pong(c.recv(timeout=10), 3)
    c.send_raw(ping_bytes(4))
    assert_pong(c.recv(), 4)


def test_empty_frames_are_ignored(chat):
    c = chat.client()
    c.send_raw(b"\n\n\0\r\n\0\n")
    c.send_raw(ping_bytes(1))
    assert_pong(c.recv(), 1)
    c.send_raw(b"\n\0\n" + ping_bytes(2) + b"\n\n\0")
    assert_pong(c.recv(), 2)
    c.assert_silent()


def test_empty_frames_before_the_first_do_not_decide_the_dialect(chat):
    # LF empties, then a NUL-terminated frame: the connection is legacy, so PING gets no reply.
    legacy = chat.client(legacy=True)
    legacy.send_raw(b"\n\r\n\n" + ping_bytes(1, b"\0"))
    legacy.assert_silent()
    reply = legacy.request({"msgid": 4, "name": f"dl{time.time_ns()}", "password": "pw"})
    assert reply["errno"] == 0, reply
    # NUL empties, then an LF-terminated frame: the connection is modern.
    modern = chat.client()
    modern.send_raw(b"\0\0\0" + ping_bytes(2))
    assert_pong(modern.recv(), 2)


def test_several_frames_in_one_write_are_all_handled_in_order(chat):
    c = chat.client()
    c.send_raw(
        ping_bytes(1)
        + ping_bytes(2, b"\0")
        + ping_bytes(3, b"\r\n")
        + ping_bytes(4)
        + ping_bytes(5)
    )
    for seq in range(1, 6):
        assert_pong(c.recv(), seq)
    c.assert_silent()


def test_one_frame_split_over_many_writes_byte_by_byte(chat):
    c = chat.client()
    name = f"split{time.time_ns()}"
    data = json.dumps({"msgid": 4, "name": name, "password": "pw", "seq": 7}).encode() + b"\n"
    for i in range(len(data)):
        c.send_raw(data[i : i + 1])
        time.sleep(0.002)
    reply = c.recv(timeout=15)
    assert reply["msgid"] == 5 and reply["seq"] == 7 and reply["errno"] == 0, reply


def test_frames_split_at_arbitrary_points_are_reassembled(chat):
    c = chat.client()
    stream = b"".join(ping_bytes(seq, b"\n" if seq % 2 else b"\0") for seq in range(1, 9))
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    for piece in pieces:
        c.send_raw(piece)
        time.sleep(0.005)
    for seq in range(1, 9):
        assert_pong(c.recv(), seq)


# --------------------------------------------------------------------------- frame limit


@pytest.mark.parametrize("terminator", [b"\n", b"\0"], ids=["lf", "nul"])
def test_frame_of_exactly_the_limit_is_accepted(chat, terminator):
    c = chat.client()
    c.send_raw(ping_bytes(1))  # a modern connection, whatever terminator follows
    assert_pong(c.recv(), 1)
    c.send_raw(padded_ping(LIMIT, 2) + terminator)
    assert_pong(c.recv(timeout=10), 2)
    c.send_raw(ping_bytes(3))
    assert_pong(c.recv(), 3)


def test_frame_over_the_limit_gets_errno_8_and_the_connection_is_closed(chat):
    c = chat.client()
    c.send_raw(ping_bytes(1) + ping_bytes(2) + padded_ping(LIMIT + 1, 3) + b"\n")
    frames = c.expect_closed(timeout=10)
    assert len(frames) == 3, frames
    assert_pong(frames[0], 1)
    assert_pong(frames[1], 2)
    assert_bad_frame_reply(frames[2], errno=8)


@pytest.mark.skipif(
    os.environ.get("CHATSERVER_TEST_TRANSPORT") == "websocket",
    reason="a WebSocket message always ends: there is no unterminated frame to refuse",
)
def test_frame_over_the_limit_without_a_terminator_is_refused(chat):
    c = chat.client()
    c.send_raw(ping_bytes(1))
    assert_pong(c.recv(), 1)
    # over the limit, still unfinished; the server may close before it has read it all
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        c.send_raw(b'{"msgid":16,"pad":"' + b"y" * LIMIT)
    frames = c.expect_closed(timeout=10)
    assert len(frames) == 1, frames
    assert_bad_frame_reply(frames[0], errno=8)


def test_oversize_frame_loses_nothing_sent_earlier(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat_frame = ca.encode({"msgid": 6, "toid": bob.id, "msg": "before the flood", "seq": 1})
    ca.send_raw(chat_frame + b"\n" + padded_ping(LIMIT + 1, 2) + b"\n")
    frames = ca.expect_closed(timeout=10)
    assert [f.get("reply_to") for f in frames] == [6, 0], frames
    assert frames[0]["errno"] == 0 and frames[0]["seq"] == 1, frames
    assert_bad_frame_reply(frames[1], errno=8)
    got = cb.expect({"msgid": 6, "msg": "before the flood"})
    assert got["msg_id"] == frames[0]["msg_id"] and got["id"] == alice.id, got


def test_oversize_frame_in_the_legacy_dialect_closes_without_a_reply(chat):
    c = chat.client(legacy=True)
    reply = c.request({"msgid": 4, "name": f"big{time.time_ns()}", "password": "pw"})
    assert reply["errno"] == 0, reply
    c.send_raw(padded_ping(LIMIT + 1, 1) + b"\0")
    assert c.expect_closed(timeout=10) == []


def test_server_keeps_serving_after_an_oversize_frame(chat):
    c = chat.client()
    c.send_raw(padded_ping(2 * LIMIT, 1) + b"\n")
    c.expect_closed(timeout=10)
    other = chat.client()
    other.send_raw(ping_bytes(2))
    assert_pong(other.recv(), 2)


# --------------------------------------------------------------------------- bad frames


BAD_FRAMES = [
    pytest.param(b"{not json", None, id="bad-json"),
    pytest.param(b'{"msgid":16,"seq":10', None, id="truncated-json"),
    pytest.param(b"[1,2,3]", None, id="array"),
    pytest.param(b'"just a string"', None, id="string"),
    pytest.param(b"42", None, id="number"),
    pytest.param(b"null", None, id="null"),
    pytest.param(b"\xff\xfe{}", None, id="not-utf8"),
    pytest.param(b'{"seq":5}', 5, id="no-msgid"),
    pytest.param(b'{"msgid":"16","seq":6}', 6, id="msgid-string"),
    pytest.param(b'{"msgid":16.5,"seq":7}', 7, id="msgid-float"),
    pytest.param(b'{"msgid":true,"seq":8}', 8, id="msgid-bool"),
    pytest.param(b'{"msgid":null,"seq":9}', 9, id="msgid-null"),
    pytest.param(b'{"msgid":[16],"seq":11}', 11, id="msgid-list"),
    pytest.param(b'{"msgid":{"n":16}}', None, id="msgid-object"),
]


@pytest.mark.parametrize(("payload", "seq"), BAD_FRAMES)
def test_unreadable_frame_gets_reply_to_0_errno_7(chat, payload, seq):
    c = chat.client()
    c.send_raw(payload + b"\n")
    reply = c.recv()
    assert_bad_frame_reply(reply)
    if seq is not None:
        assert reply.get("seq") == seq, reply
    # the connection keeps working
    c.send_raw(ping_bytes(100))
    assert_pong(c.recv(), 100)


def test_bad_frames_between_good_ones_are_answered_in_order(chat):
    c = chat.client()
    c.send_raw(ping_bytes(1) + b"garbage\n" + b'{"seq":2}\n' + ping_bytes(3))
    assert_pong(c.recv(), 1)
    assert_bad_frame_reply(c.recv())
    second = c.recv()
    assert_bad_frame_reply(second)
    assert second["seq"] == 2
    assert_pong(c.recv(), 3)


def test_bad_frame_as_the_first_frame_after_login_keeps_the_session(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.send_raw(b"}{\n")
    assert_bad_frame_reply(ca.recv())
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "still here"})
    cb.expect({"msgid": 6, "msg": "still here", "id": alice.id})


def test_server_keeps_serving_other_connections_after_garbage(chat):
    bystander = chat.client()
    bystander.send_raw(ping_bytes(1))
    assert_pong(bystander.recv(), 1)
    vandal = chat.client()
    vandal.send_raw(os.urandom(4096).replace(b"\n", b"") + b"\n")
    vandal.send_raw(b"\0\xc3\x28\n{{{{\0" + bytes(range(256)) + b"\n")
    vandal.send_raw(b'{"msgid":1,"id":')  # an unfinished frame, then an abrupt close
    vandal.close()
    time.sleep(0.2)
    bystander.send_raw(ping_bytes(2))
    assert_pong(bystander.recv(), 2)
    newcomer = chat.client()
    reply = newcomer.request({"msgid": 4, "name": f"after{time.time_ns()}", "password": "pw"})
    assert reply["errno"] == 0, reply


def test_unfinished_frame_then_close_does_not_hurt_the_server(chat):
    c = chat.client()
    c.send_raw(b'{"msgid":1,"id":')
    c.close()
    other = chat.client()
    other.send_raw(ping_bytes(1))
    assert_pong(other.recv(), 1)


# --------------------------------------------------------------------------- server frames


def test_every_server_frame_is_one_json_object_ending_with_lf(chat):
    alice, bob = chat.users(2)
    ca = chat.client()
    ca.login(alice)
    cb = chat.online(bob)
    ca.request({"msgid": 16})
    ca.request({"msgid": 99})
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "line one\nline two\r\n\0end"})
    got = cb.expect({"msgid": 6})
    assert got["msg"] == "line one\nline two\r\n\0end"
    ca.send_raw(b"garbage\n")
    ca.recv()
    ca.assert_silent(0.2)
    cb.assert_silent(0.2)
    for conn in (ca, cb):
        assert conn.buffer == b"", conn.buffer  # nothing left after the last LF
        assert conn.raw_frames
        for raw in conn.raw_frames:
            assert raw.startswith(b"{") and raw.endswith(b"}\n"), raw
            assert b"\0" not in raw and b"\r" not in raw, raw


def test_legacy_replies_also_end_with_lf(chat):
    c = chat.client(legacy=True)
    name = f"lgf{time.time_ns()}"
    c.request({"msgid": 4, "name": name, "password": "pw"})
    c.send({"msgid": 1, "name": name, "password": "pw"})
    assert c.expect({"msgid": 2})["errno"] == 0
    c.assert_silent(0.2)
    assert c.buffer == b""
    assert len(c.raw_frames) == 2
    for raw in c.raw_frames:
        assert raw.startswith(b"{") and raw.endswith(b"}\n"), raw
        assert b"\0" not in raw and b"\r" not in raw, raw
