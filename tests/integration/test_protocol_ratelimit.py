"""Rate limits never bite a well-behaved client: a burst of 100, then 50 requests/s sustained."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration

BURST = 100
RATE = 50  # requests per second
SUSTAIN_SECONDS = 2.0


def burst_then_sustain(conn, make_request) -> list[dict]:
    """Send BURST requests in one write, then RATE/s for SUSTAIN_SECONDS; return the replies."""
    seqs = [conn.next_seq() for _ in range(BURST)]
    conn.send_raw(
        b"".join(conn.encode({**make_request(i), "seq": s}) + b"\n" for i, s in enumerate(seqs))
    )
    replies = [conn.expect({"msgid": 11, "seq": s}, timeout=10) for s in seqs]
    # Paced on an absolute schedule that starts after the burst was answered, so jitter can
    # only make the client slower than RATE, never faster.
    start = time.monotonic()
    for k in range(1, int(RATE * SUSTAIN_SECONDS) + 1):
        delay = start + k / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        replies.append(conn.request(make_request(BURST + k - 1)))
    return replies


def test_a_burst_of_100_then_50_per_second_all_pass(chat):
    c = chat.client()
    replies = burst_then_sustain(c, lambda i: {"msgid": 16})
    assert len(replies) == BURST + RATE * SUSTAIN_SECONDS
    assert [r["errno"] for r in replies if r["errno"] != 0] == []
    assert all(r["reply_to"] == 16 for r in replies)


def test_the_limit_does_not_bite_whatever_the_requests(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    time.sleep(0.2)  # the few set-up requests above are not part of the burst

    def mixed(i: int) -> dict:
        kind = i % 4
        if kind == 0:
            return {"msgid": 6, "toid": bob.id, "msg": f"m{i}"}
        if kind == 1:
            return {"msgid": 16}
        if kind == 2:
            return {"msgid": 10, "groupid": gid, "msg": f"g{i}"}
        return {"msgid": 99}  # a bad request is still a request, answered with errno 7

    replies = burst_then_sustain(ca, mixed)
    assert not [r for r in replies if r["errno"] == 9], "rate limited"
    assert [r["errno"] for r in replies] == [7 if i % 4 == 3 else 0 for i in range(len(replies))]
    # bob got every chat and group chat, in order
    expected = sum(1 for i in range(len(replies)) if i % 4 in (0, 2))
    got = [f for f in cb.drain(1.0) if f["msgid"] in (6, 10)]
    while len(got) < expected:
        got.append(cb.expect(lambda f: f["msgid"] in (6, 10)))
    assert [f["msg"] for f in got] == [
        f"m{i}" if i % 4 == 0 else f"g{i}" for i in range(len(replies)) if i % 4 in (0, 2)
    ]
