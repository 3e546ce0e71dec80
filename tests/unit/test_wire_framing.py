"""FrameSplitter: LF and NUL terminated frames over arbitrary reads, the frame limit, dialect."""

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.connection_core import ConnectionCore, TransportLimits
from chatserver.adapters.wire.framing import FrameSplitter


def feed_all(splitter: FrameSplitter, *chunks: bytes) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += splitter.feed(chunk)
    return frames


def reference_split(stream: bytes, limit: int) -> tuple[list[bytes], bool | None, bool]:
    """A byte-at-a-time statement of the framing rules, to check the fast splitter against."""
    frames: list[bytes] = []
    legacy: bool | None = None
    current = b""
    for byte in stream:
        if byte in b"\n\0":
            frame = current[:-1] if byte == ord("\n") and current.endswith(b"\r") else current
            current = b""
            if len(frame) > limit:
                return frames, legacy, True
            if frame:
                frames.append(frame)
                if legacy is None:
                    legacy = byte == 0
        else:
            current += bytes([byte])
            if len(current) > limit + 1 or (len(current) == limit + 1 and byte != ord("\r")):
                return frames, legacy, True
    return frames, legacy, False


def test_lf_terminated_frames_come_back_without_the_terminator() -> None:
    assert FrameSplitter().feed(b'{"msgid":16}\n') == [b'{"msgid":16}']


def test_nul_terminated_frames_come_back_without_the_terminator() -> None:
    assert FrameSplitter().feed(b'{"msgid":16}\0') == [b'{"msgid":16}']


def test_a_cr_before_lf_is_dropped() -> None:
    assert FrameSplitter().feed(b"a\r\nb\r\n") == [b"a", b"b"]


def test_only_one_cr_before_lf_is_dropped_and_none_before_nul() -> None:
    assert FrameSplitter().feed(b"a\r\r\nb\r\0") == [b"a\r", b"b\r"]


def test_empty_frames_are_skipped() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"\n\n\0\r\n\0a\n\n") == [b"a"]


def test_many_frames_in_one_read_all_come_back_in_order() -> None:
    assert FrameSplitter().feed(b"1\n2\0003\r\n4\n") == [b"1", b"2", b"3", b"4"]


def test_a_frame_split_over_many_reads_comes_back_once_complete() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b'{"msgid"') == []
    assert splitter.feed(b":1,") == []
    assert splitter.feed(b'"id":1}') == []
    assert splitter.feed(b"\0") == [b'{"msgid":1,"id":1}']


def test_a_read_may_end_one_frame_and_start_the_next() -> None:
    splitter = FrameSplitter()
    assert feed_all(splitter, b"ab", b"c\nde", b"f\ng", b"\n") == [b"abc", b"def", b"g"]


def test_a_cr_lf_split_between_reads_is_still_one_terminator() -> None:
    assert feed_all(FrameSplitter(), b"abc\r", b"\n") == [b"abc"]


def test_dialect_is_unknown_until_the_first_non_empty_frame() -> None:
    splitter = FrameSplitter()
    assert splitter.legacy is None
    splitter.feed(b"\n\0\r\n{")
    assert splitter.legacy is None


def test_a_first_frame_ended_by_nul_means_a_legacy_client() -> None:
    splitter = FrameSplitter()
    splitter.feed(b"\n\n{}\0{}\n")
    assert splitter.legacy is True


def test_a_first_frame_ended_by_lf_means_a_modern_client() -> None:
    splitter = FrameSplitter()
    splitter.feed(b"\0{}\n{}\0")
    assert splitter.legacy is False


def test_the_dialect_never_changes_after_the_first_frame() -> None:
    splitter = FrameSplitter()
    splitter.feed(b"{}\0")
    splitter.feed(b"{}\n")
    assert splitter.legacy is True


def test_a_frame_of_exactly_the_limit_passes() -> None:
    splitter = FrameSplitter(limit=8)
    assert splitter.feed(b"12345678\r\n") == [b"12345678"]
    assert splitter.feed(b"1234") == []
    assert splitter.feed(b"5678\r") == []
    assert splitter.feed(b"\n") == [b"12345678"]
    assert not splitter.too_large


def test_a_complete_frame_over_the_limit_is_too_large() -> None:
    splitter = FrameSplitter(limit=8)
    assert splitter.feed(b"ok\n123456789\nlater\n") == [b"ok"]
    assert splitter.too_large


def test_an_unfinished_frame_over_the_limit_is_too_large_at_once() -> None:
    splitter = FrameSplitter(limit=8)
    assert splitter.feed(b"ok\n12345") == [b"ok"]
    assert not splitter.too_large
    assert splitter.feed(b"6789") == []
    assert splitter.too_large


def test_a_cr_over_the_limit_counts_unless_an_lf_follows() -> None:
    splitter = FrameSplitter(limit=8)
    splitter.feed(b"12345678\r")
    assert not splitter.too_large
    splitter.feed(b"x")
    assert splitter.too_large


def test_a_cr_before_nul_counts_towards_the_limit() -> None:
    splitter = FrameSplitter(limit=8)
    assert splitter.feed(b"12345678\r\0") == []
    assert splitter.too_large


def test_nothing_comes_back_after_a_frame_was_too_large() -> None:
    splitter = FrameSplitter(limit=4)
    splitter.feed(b"123456")
    assert splitter.feed(b"\nok\n") == []


def test_a_too_large_frame_does_not_decide_the_dialect() -> None:
    splitter = FrameSplitter(limit=4)
    splitter.feed(b"123456\0")
    assert splitter.too_large
    assert splitter.legacy is None


def test_the_default_limit_is_64_kib() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"x" * 65536 + b"\n") == [b"x" * 65536]
    splitter.feed(b"x" * 65537)
    assert splitter.too_large


def test_a_large_frame_in_small_reads_is_reassembled() -> None:
    payload = bytes(range(1, 10)) * 7000
    payload = payload.replace(b"\n", b"x")
    splitter = FrameSplitter(limit=len(payload))
    chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    assert feed_all(splitter, *chunks, b"\n") == [payload]


streams = st.lists(
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from([b"\n", b"\0", b"\r", b"\r\n", b"{}", b'{"msgid":16}']),
    ),
    max_size=30,
).map(b"".join)


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


@given(streams, st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 40))
def test_splitting_a_stream_anywhere_yields_the_same_frames(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    whole = FrameSplitter(limit)
    whole_frames = whole.feed(stream)
    pieces = FrameSplitter(limit)
    piece_frames = feed_all(pieces, *split_at(stream, cuts))
    assert piece_frames == whole_frames
    assert (pieces.legacy, pieces.too_large) == (whole.legacy, whole.too_large)


@given(streams, st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 40))
def test_the_splitter_agrees_with_a_byte_at_a_time_model(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    splitter = FrameSplitter(limit)
    frames = feed_all(splitter, *split_at(stream, cuts))
    assert (frames, splitter.legacy, splitter.too_large) == reference_split(stream, limit)


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_give_non_empty_frames_without_terminators(chunks: list[bytes]) -> None:
    splitter = FrameSplitter(limit=100)
    for frame in feed_all(splitter, *chunks):
        assert frame
        assert b"\n" not in frame
        assert b"\0" not in frame
        assert len(frame) <= 100


def test_a_splitter_has_heard_something_once_a_frame_has_begun() -> None:
    splitter = FrameSplitter()
    assert not splitter.heard
    splitter.feed(b"\n\0\r\n")  # empty frames are nothing
    assert not splitter.heard
    splitter.feed(b'{"msg')
    assert splitter.heard and splitter.legacy is None


def test_only_modern_clients_that_have_spoken_are_timed_out_for_silence() -> None:
    limits = TransportLimits(login_timeout_seconds=30, idle_timeout_seconds=300)
    silent, partial, modern, legacy = (
        ConnectionCore(limits, "?", "?", 0.0) for _ in range(4)
    )
    partial.receive(b'{"msgid"', 0.0)
    modern.receive(b'{"msgid":16}\n', 0.0)
    legacy.receive(b'{"msgid":1}\0', 0.0)
    assert silent.allowed_silence(logged_in=False) == math.inf
    assert partial.allowed_silence(logged_in=False) == 30
    assert modern.allowed_silence(logged_in=False) == 30
    assert modern.allowed_silence(logged_in=True) == 300
    assert legacy.allowed_silence(logged_in=False) == math.inf
    assert legacy.allowed_silence(logged_in=True) == math.inf
