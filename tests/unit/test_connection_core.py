"""ConnectionCore, without sockets: any split of any byte stream gives the same frames and the
same verdict (closing or not, and why); PROXY header, budget, frame limit, silence, reasons."""

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.connection_core import (
    CLOSED_BY_CLIENT,
    LIMITED_BEFORE_DISCONNECT,
    Close,
    ConnectionCore,
    Refused,
    TransportLimits,
)
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.wire.codec import Dialect

LIMITS = TransportLimits(frame_bytes=16, request_burst=4, requests_per_second=1.0,
                         refused_before_disconnect=3)
PROXIED = TransportLimits(frame_bytes=16, proxy_protocol=True, proxy_header_seconds=5.0)


def core(limits: TransportLimits = LIMITS, peer: str = "127.0.0.1") -> ConnectionCore:
    return ConnectionCore(limits, f"{peer}:4000", peer, 0.0, TrustedProxies())


def outcome(limits: TransportLimits, chunks: list[bytes]) -> tuple[object, ...]:
    """Everything a driver would act on, after feeding chunks at one instant."""
    connection = core(limits)
    items: list[bytes | Refused] = []
    for chunk in chunks:
        items += connection.receive(chunk, 0.0)
    return items, connection.closing, connection.dialect, connection.address


def splits(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


# Streams made of the pieces that matter: frame bytes, both terminators, CR, long runs.
PIECES = st.sampled_from([b"a", b"{}", b"\n", b"\0", b"\r", b"\r\n", b"x" * 15, b"y" * 17])
STREAMS = st.lists(PIECES, max_size=40).map(b"".join)
CUTS = st.lists(st.integers(min_value=0, max_value=800), max_size=12)


@given(STREAMS, CUTS)
def test_any_split_of_a_stream_gives_the_same_frames_and_verdict(
    stream: bytes, cuts: list[int]
) -> None:
    assert outcome(LIMITS, splits(stream, cuts)) == outcome(LIMITS, [stream])


@given(STREAMS, CUTS)
def test_byte_at_a_time_gives_the_same_frames_and_verdict(stream: bytes, cuts: list[int]) -> None:
    del cuts
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert outcome(LIMITS, one_by_one) == outcome(LIMITS, [stream])


HEADERS = st.sampled_from([
    b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 4000\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY TCP4 1.2.3.4\r\n",  # malformed
    b"GET / HTTP/1.1\r\n",  # not a header at all
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\x7f\x00\x00\x01\x15\xb3\x0f\xa0",
])


@given(HEADERS, STREAMS, CUTS)
def test_any_split_behind_a_proxy_header_gives_the_same_address_frames_and_verdict(
    header: bytes, stream: bytes, cuts: list[int]
) -> None:
    whole = header + stream
    assert outcome(PROXIED, splits(whole, cuts)) == outcome(PROXIED, [whole])


def test_the_proxy_header_gives_the_clients_address_and_what_follows_is_framed() -> None:
    connection = core(PROXIED)
    assert connection.receive(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 4000\r\n{}", 0.0) == []
    assert connection.address == "203.0.113.7"
    assert connection.peer == "203.0.113.7:5555"
    assert connection.receive(b"\n", 0.0) == [b"{}"]


def test_a_proxy_header_from_an_untrusted_peer_closes_at_once() -> None:
    connection = core(PROXIED, peer="198.51.100.1")
    assert connection.closing is not None
    assert connection.closing.abort and "not a trusted proxy" in connection.closing.reason
    assert connection.receive(b"PROXY UNKNOWN\r\n{}\n", 0.0) == []


def test_no_proxy_header_in_time_closes_with_that_reason() -> None:
    connection = core(PROXIED)
    assert connection.deadline(False) == 5.0
    assert connection.check(4.9, False) is None
    verdict = connection.check(5.0, False)
    assert verdict == Close("no PROXY header within 5 s", abort=True)


def test_frames_over_the_budget_are_refused_then_a_flood_is_cut_off() -> None:
    connection = core()
    items = connection.receive(b"1\n2\n3\n4\n5\n6\n7\n8\n9\n", 0.0)
    assert items == [b"1", b"2", b"3", b"4", Refused(b"5"), Refused(b"6"), Refused(b"7")]
    assert connection.closing is not None
    assert "still flooding" in connection.closing.reason
    assert connection.receive(b"10\n", 100.0) == []


def test_a_client_that_slows_down_is_forgiven() -> None:
    connection = core()
    assert connection.receive(b"1\n2\n3\n4\n5\n6\n", 0.0)[-1] == Refused(b"6")
    assert connection.refused == 2
    # Four seconds at one a second refill the bucket: the refusals are forgotten.
    assert connection.receive(b"7\n", 4.0) == [b"7"]
    assert connection.refused == 0
    assert connection.closing is None


def test_requests_refused_by_a_limit_cut_a_flooder_off_and_a_patient_client_is_not() -> None:
    """Issue 16.1: a REG refused errno 9 ("too many new accounts from your address") and sent
    again at once, thousands of times, cost a reply each; past limited_before_disconnect of
    those (less one a second refilled) the client is cut off."""
    flooder, patient = core(), core()
    cuts = [flooder.limited(0.0) for _ in range(LIMITED_BEFORE_DISCONNECT + 1)]
    assert cuts == [False] * LIMITED_BEFORE_DISCONNECT + [True]
    assert flooder.closing is not None and flooder.closing.flooding
    assert f"still flooding after {LIMITED_BEFORE_DISCONNECT} requests refused by a limit" in (
        flooder.closing.reason)
    assert flooder.receive(b"more\n", 0.1) == []
    # One refusal a second, for a minute: waiting as told.
    assert not any(patient.limited(float(second)) for second in range(600))
    assert patient.closing is None


def test_a_refusal_while_the_address_floods_cuts_the_connection_off_at_once() -> None:
    connection = core()
    assert connection.limited(0.0, address_flooded=True)
    assert connection.closing is not None and connection.closing.flooding
    assert not connection.limited(0.0, address_flooded=True)  # the first reason holds
    assert "from an address that is flooding" in connection.closing.reason


def test_a_budget_flood_is_flagged_flooding() -> None:
    connection = core()
    connection.receive(b"1\n2\n3\n4\n5\n6\n7\n8\n9\n", 0.0)
    assert connection.closing is not None and connection.closing.flooding


def test_bad_frames_cost_as_much_as_good_ones() -> None:
    connection = core()
    items = connection.receive(b'{"msgid":99}\n' * 6, 0.0)
    assert sum(isinstance(item, Refused) for item in items) == 2


def test_a_frame_too_long_ends_the_connection_with_errno_8_in_its_dialect() -> None:
    connection = core()
    assert connection.receive(b"ok\n" + b"z" * 40, 0.0) == [b"ok"]
    assert connection.closing is not None
    assert connection.closing.reason == "frame too large"
    assert connection.closing.reply is not None and b'"errno":8' in connection.closing.reply
    legacy = core()
    assert legacy.receive(b"ok\0" + b"z" * 40, 0.0) == [b"ok"]
    assert legacy.dialect is Dialect.LEGACY
    assert legacy.closing is not None and legacy.closing.reply is None  # the original: silent


def test_silence_deadlines_before_and_after_login() -> None:
    limits = TransportLimits(login_timeout_seconds=30.0, idle_timeout_seconds=300.0)
    connection = core(limits)
    assert connection.deadline(False) == math.inf  # not a byte yet: maybe an original client
    connection.receive(b"{}\n", 10.0)
    assert connection.deadline(False) == 40.0
    assert connection.deadline(True) == 310.0
    assert connection.check(39.0, False) is None
    assert connection.check(39.0, True, busy=True) is None  # a request in hand is activity
    assert connection.deadline(False) == 69.0
    assert connection.check(69.0, False) == Close("not logged in for 30 s")


def test_an_original_client_is_never_closed_for_silence() -> None:
    connection = core(TransportLimits())
    connection.receive(b"{}\0", 0.0)
    assert connection.deadline(True) == math.inf
    assert connection.check(10_000.0, True) is None


def test_the_first_reason_is_the_one_logged() -> None:
    connection = core()
    connection.close("too many unreceipted messages")
    connection.receive_eof()
    assert connection.closing == Close("too many unreceipted messages")
    by_client = core()
    by_client.receive_eof()
    assert by_client.closing == Close(CLOSED_BY_CLIENT)


def test_a_client_that_stops_reading_is_dropped_with_that_reason() -> None:
    connection = core(TransportLimits(outbound_bytes=100))
    assert not connection.over_outbound(100)
    assert connection.over_outbound(101)
    assert connection.closing is not None and connection.closing.abort
    assert connection.closing.reason.startswith("client not reading")


# Whole messages (WebSocket): one frame each, no terminator, never empty here (a stream skips
# empty frames; a message is served as it is).
MESSAGES = st.lists(st.sampled_from([b"a", b"{}", b"x" * 15, b"y" * 16, b"z" * 17]),
                    max_size=12)


def message_outcome(limits: TransportLimits, messages: list[bytes]) -> tuple[object, ...]:
    connection = ConnectionCore(limits, "127.0.0.1:4000", "127.0.0.1", 0.0, messages=True)
    items: list[bytes | Refused] = []
    for message in messages:
        items += connection.receive_message(message, 0.0)
    return items, connection.closing, connection.dialect, connection.address


@given(MESSAGES)
def test_whole_messages_get_the_frames_and_verdict_of_the_same_frames_in_a_stream(
    messages: list[bytes],
) -> None:
    """The WebSocket endpoint's budget, frame limit and close reasons are the TCP ones."""
    stream = b"".join(message + b"\n" for message in messages)
    assert message_outcome(LIMITS, messages) == outcome(LIMITS, [stream])


def test_whole_messages_have_no_proxy_header_and_their_silence_counts_from_the_start() -> None:
    limits = TransportLimits(proxy_protocol=True, login_timeout_seconds=30.0)
    connection = ConnectionCore(limits, "10.0.0.9:4000", "10.0.0.9", 5.0, TrustedProxies(),
                                messages=True)
    assert connection.closing is None and not connection.awaiting_proxy_header
    assert connection.deadline(False) == 35.0  # a browser is no original client
    assert connection.receive_message(b"PROXY UNKNOWN", 6.0) == [b"PROXY UNKNOWN"]
    assert connection.check(36.0, False) == Close("not logged in for 30 s")
    assert connection.receive_message(b"{}", 37.0) == []  # closing: nothing more is served
