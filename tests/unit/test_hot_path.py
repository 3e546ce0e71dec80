"""The shortcuts of the hot path give what the general path gives: the formatted chat ACK, the
frame shared by a group message's members, the framing of whole lines, ids taken without a
coroutine, requests served by hand, metrics counted in plain numbers."""

import asyncio
import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.metrics import LATENCY_BUCKETS, PrometheusMetrics
from chatserver.adapters.wire.codec import Dialect, Request, decode, encode_event, encode_result
from chatserver.adapters.wire.framing import FrameSplitter
from chatserver.application.commands import SendDirectMessage, SendGroupMessage
from chatserver.application.message_ids import MessageIdAllocator
from chatserver.application.results import MessageAccepted
from chatserver.domain.messages import DirectMessage, GroupMessage, Kept
from tests.unit.test_wire_framing import reference_split

INT64 = st.integers(-(2**63), 2**64 - 1)  # as orjson reads them: up to an unsigned 64 bits


@given(msgid=st.sampled_from([6, 10]), seq=st.none() | INT64, msg_id=INT64, pos=INT64)
def test_the_formatted_chat_ack_is_what_orjson_writes(
    msgid: int, seq: int | None, msg_id: int, pos: int
) -> None:
    command = SendDirectMessage(1, "x") if msgid == 6 else SendGroupMessage(1, "x")
    expected: dict[str, Any] = {"msgid": 11} if seq is None else {"msgid": 11, "seq": seq}
    expected |= {"reply_to": msgid, "errno": 0, "msg_id": msg_id, "pos": pos}
    if msgid == 10:  # a GROUP_CHAT's ACK always lists not_stored (PROTOCOL.md Version 2)
        expected["not_stored"] = []
    frames = encode_result(
        Request(msgid, seq, command), MessageAccepted(msg_id, pos=pos), Dialect.MODERN
    )
    assert frames == [orjson.dumps(expected, option=orjson.OPT_APPEND_NEWLINE)]


def test_a_chat_ack_in_the_legacy_dialect_is_still_not_sent() -> None:
    request = Request(6, None, SendDirectMessage(1, "x"))
    assert encode_result(request, MessageAccepted(5), Dialect.LEGACY) == []


def test_a_group_message_is_encoded_once_for_all_its_members_each_at_its_pos() -> None:
    from chatserver.adapters.wire import encoding

    message = GroupMessage(7, 1, 2, "bob", "hello", 1795735800000)
    first = encode_event(Kept(3, message), Dialect.MODERN)
    encoded_once = encoding._last_encoded[1]
    second = encode_event(Kept(9, message), Dialect.MODERN)
    assert encoding._last_encoded[1] is encoded_once  # the object was not encoded again
    assert first is not None and second is not None
    assert orjson.loads(first) == {**orjson.loads(second), "pos": 3}
    assert orjson.loads(second)["pos"] == 9


def test_an_equal_but_other_event_is_encoded_for_itself() -> None:
    one = DirectMessage(7, 1, "ann", 2, "hello", 1795735800000)
    other = DirectMessage(8, 1, "ann", 2, "hello", 1795735800000)
    assert orjson.loads(encode_event(one, Dialect.MODERN) or b"")["msg_id"] == 7
    assert orjson.loads(encode_event(other, Dialect.MODERN) or b"")["msg_id"] == 8
    legacy = encode_event(other, Dialect.LEGACY)
    modern = orjson.loads(encode_event(other, Dialect.MODERN) or b"")
    del modern["msg_id"], modern["ts"]  # the original's fields only
    assert legacy is not None and orjson.loads(legacy) == modern


@given(st.lists(st.sampled_from([b"a", b"{}", b"", b"\r", b"\0", b"x" * 9]), max_size=6))
def test_a_read_of_whole_lines_is_split_by_the_framing_rules(pieces: list[bytes]) -> None:
    data = b"".join(piece + b"\n" for piece in pieces)
    splitter = FrameSplitter(limit=8)
    frames = splitter.feed(data)
    expected, legacy, too_large = reference_split(data, limit=8)
    assert (frames, splitter.legacy, splitter.too_large) == (expected, legacy, too_large)


def test_an_id_is_taken_without_waiting_until_a_reservation_is_due() -> None:
    ids = MessageIdAllocator(MemoryUnitOfWork(), block_size=10)
    assert ids.take() is None  # no block yet: next() reserves one

    async def next_id() -> int:
        return await ids.next()

    first = asyncio.run(next_id())
    taken = [ids.take() for _ in range(3)]
    assert taken == [first + 1, first + 2, first + 3]
    assert ids.take() is None  # the middle of the block: next() reserves the following one
    rest = [asyncio.run(next_id()) for _ in range(6)]
    assert rest == list(range(first + 4, first + 10))
    assert ids.take() is None  # the block is used up: next() moves to the spare one
    following = asyncio.run(next_id())
    assert following > rest[-1] and ids.take() == following + 1


def test_a_decoded_chat_is_a_request_like_any_other() -> None:
    request = decode(b'{"msgid":6,"seq":2,"id":1,"toid":3,"msg":"hi"}')
    assert type(request) is Request
    assert request == Request(6, 2, SendDirectMessage(3, "hi"), 1)
    assert request.claimed_id == 1


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition, and the OpenMetrics one, with the creation times left out."""
    texts = (generate_latest(registry), openmetrics_latest(registry))
    return [re.sub(rb"(_created\{[^}]*\}) \S+", rb"\1 T", text).decode() for text in texts]


def test_metrics_counted_in_plain_numbers_are_exported_as_prometheus_client_would() -> None:
    metrics = PrometheusMetrics()
    reference = CollectorRegistry()
    routed = Counter("chatserver_messages_routed", "Deliveries routed, by outcome",
                     ["outcome"], registry=reference)
    requests = Histogram("chatserver_request_seconds", "Time to serve a request, by msgid",
                         ["msgid"], buckets=LATENCY_BUCKETS, registry=reference)
    errors = Counter("chatserver_errors", "Error replies, by errno", ["errno"],
                     registry=reference)
    for outcome, count in [("local", 1), ("stored", 2), ("local", 0), ("local", 3)]:
        metrics.routed(outcome, count)
        if count:
            routed.labels(outcome).inc(count)
    for msgid, errno, seconds in [(6, 0, 0.0001), (6, 4, 0.001), (10, 0, 0.0025), (0, 7, 0.0),
                                  (1, 0, 3.0), (6, 0, 0.0049)]:
        metrics.request(msgid, errno, seconds)
        requests.labels(str(msgid)).observe(seconds)
        if errno:
            errors.labels(str(errno)).inc()
    ours = CollectorRegistry()
    ours.register(metrics.routed_total)
    ours.register(metrics.requests)
    ours.register(metrics.errors)
    assert _exposition(ours) == _exposition(reference)
