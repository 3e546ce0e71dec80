"""The PROXY protocol header: v1 and v2 parse, anything else is refused with ProxyHeaderError."""

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.proxy_header import (
    V1_MAX_BYTES,
    V2_MAX_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    parse_proxy_header,
)

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)


def v1(source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    family = "TCP4" if source.version == 4 else "TCP6"
    destination = "10.0.0.1" if source.version == 4 else "::1"
    return f"PROXY {family} {source} {destination} {port} 6000\r\n".encode()


def v2(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, tlvs: bytes = b""
) -> bytes:
    family = 0x11 if source.version == 4 else 0x21
    destination = ipaddress.ip_address("10.0.0.1" if source.version == 4 else "::1")
    body = source.packed + destination.packed + struct.pack("!HH", port, 6000) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def read_in_pieces(data: bytes, cuts: list[int]) -> tuple[ProxyHeader, bytes] | None:
    """Feed data cut at cuts; the header and every byte after it (those fed with it, and
    those not fed yet)."""
    reader = ProxyHeaderReader()
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        parsed = reader.feed(data[start:end])
        if parsed is not None:
            header, rest = parsed
            return header, rest + data[end:]
    return None


def test_nginx_v1_header_gives_the_client_address_and_keeps_what_follows() -> None:
    data = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 6001\r\n" + b'{"msgid":16}\n'
    assert ProxyHeaderReader().feed(data) == (
        ProxyHeader(("203.0.113.7", 51234), 1), b'{"msgid":16}\n'
    )


def test_ipv6_addresses_are_normalised() -> None:
    header = parse_proxy_header(b"PROXY TCP6 2001:DB8:0:0::1 ::1 1 2\r\n")
    assert header is not None and header[0].source == ("2001:db8::1", 1)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n",
        V2_SIGNATURE + b"\x20\x00\x00\x00",  # LOCAL: a health check from the proxy itself
        V2_SIGNATURE + b"\x21\x00\x00\x00",  # PROXY with an unspecified family
        V2_SIGNATURE + b"\x21\x31\x00\xd8" + b"\0" * 216,  # a UNIX socket
    ],
)
def test_a_header_without_a_usable_source_leaves_the_peer_as_is(data: bytes) -> None:
    parsed = parse_proxy_header(data)
    assert parsed is not None and parsed == (ProxyHeader(None, parsed[0].version), len(data))


@pytest.mark.parametrize(
    "data",
    [
        b'{"msgid":16}\n',
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # an IPv6 address for TCP4
        b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"x" * V1_MAX_BYTES,  # no CRLF within the bound
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12,  # version 1 in a v2 signature
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12,  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\0" * 4,  # too short for two IPv4 addresses
        V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_BYTES),  # announces too much
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderReader().feed(data)


@pytest.mark.parametrize(
    "data", [b"", b"P", b"PROXY", b"PROXY TCP4 1.2", b"\r\n\r\n\0", V2_SIGNATURE]
)
def test_a_valid_beginning_waits_for_more(data: bytes) -> None:
    assert ProxyHeaderReader().feed(data) is None


@given(
    source=ipv4 | ipv6,
    port=ports,
    version=st.sampled_from([1, 2]),
    tlvs=st.binary(max_size=64),
    after=st.binary(max_size=200),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_a_valid_header_split_anywhere_parses_and_keeps_the_bytes_after_it(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    version: int,
    tlvs: bytes,
    after: bytes,
    cuts: list[int],
) -> None:
    header = v1(source, port) if version == 1 else v2(source, port, tlvs)
    data = header + after
    parsed = read_in_pieces(data, sorted({min(c, len(data)) for c in cuts}))
    assert parsed == (ProxyHeader((str(source), port), version), after)


arbitrary = (
    st.binary(max_size=V2_MAX_BYTES + 100)
    | st.binary(max_size=300).map(lambda b: b"PROXY " + b)
    | st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b)
)


@given(arbitrary, st.lists(st.integers(0, 3000), max_size=6))
def test_arbitrary_bytes_never_raise_anything_but_proxy_header_error(
    data: bytes, cuts: list[int]
) -> None:
    with contextlib.suppress(ProxyHeaderError):
        read_in_pieces(data, sorted({min(c, len(data)) for c in cuts}))


@given(st.binary(min_size=V2_MAX_BYTES, max_size=V2_MAX_BYTES + 50))
def test_the_reader_never_waits_past_its_bound(data: bytes) -> None:
    with contextlib.suppress(ProxyHeaderError):
        assert ProxyHeaderReader().feed(data) is not None


@given(st.binary(max_size=40).map(lambda b: b"PROXY TCP4 " + b))
def test_mutated_v1_lines_parse_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(ProxyHeaderError):
        ProxyHeaderReader().feed(data + b"\r\n")


def test_trusted_proxies_match_addresses_blocks_and_mapped_ipv4() -> None:
    from chatserver.adapters.tcp.proxy_header import TrustedProxies

    default = TrustedProxies()
    assert "127.0.0.1" in default and "127.8.9.10" in default and "::1" in default
    assert "::ffff:127.0.0.1" in default  # an IPv4 peer on a dual-stack socket
    assert "10.0.0.1" not in default and "?" not in default and "local" not in default
    nginx = TrustedProxies(["10.1.2.0/24", "2001:db8::5"])
    assert "10.1.2.200" in nginx and "10.1.3.1" not in nginx
    assert "2001:db8::5" in nginx and "127.0.0.1" not in nginx
