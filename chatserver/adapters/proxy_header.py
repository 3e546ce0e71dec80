"""The PROXY protocol header (HAProxy's, v1 text and v2 binary) that a load balancer such as
nginx (`proxy_protocol on;`) sends first on each connection: who the client really is.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. Only what a receiver needs:
the source address and port; v2's TLVs are skipped.
"""

import ipaddress
import struct
from collections.abc import Iterable

from attrs import frozen

V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16
# The spec allows 64 KiB of TLVs; balancers send a few dozen bytes. More is not a header we
# wait for.
V2_MAX_BYTES = V2_FIXED_BYTES + 2048

_V2_FAMILIES = {0x1: (4, ipaddress.IPv4Address), 0x2: (16, ipaddress.IPv6Address)}


# Whom a PROXY header or an X-Forwarded-For header is believed from unless told otherwise
# (--trusted-proxy): this machine, where `chatserver cluster` runs nginx.
LOOPBACK = ("127.0.0.0/8", "::1/128")


class TrustedProxies:
    """The addresses (CIDR blocks) of the proxies whose word on a client's address is taken:
    a PROXY header, or X-Forwarded-For, from any other peer is refused."""

    def __init__(self, cidrs: Iterable[str] = LOOPBACK) -> None:
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(network) for network in self.networks)


def check_cidrs(cidrs: Iterable[str]) -> None:
    """Raise ValueError, naming it, for a CIDR block that cannot be parsed."""
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR block: {cidr!r}") from None


class ProxyHeaderError(ValueError):
    """The bytes do not begin with a valid PROXY protocol header."""


@frozen
class ProxyHeader:
    """A parsed header. source is None when the proxy did not say (v1 UNKNOWN, v2 LOCAL or
    an unspecified or UNIX family): then the connection's own peer is the client."""

    source: tuple[str, int] | None
    version: int


class ProxyHeaderReader:
    """Takes a connection's first bytes as they arrive, until the header is complete."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """The header and the bytes after it once the header is complete; None while more
        bytes are needed. Raises ProxyHeaderError as soon as the bytes cannot be a header, and
        never holds more than V2_MAX_BYTES."""
        self._buffer += data
        parsed = parse_proxy_header(self._buffer)
        if parsed is None:
            return None
        header, length = parsed
        rest, self._buffer = self._buffer[length:], b""
        return header, rest


def parse_proxy_header(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of data and its length in bytes; None if data is a valid but
    incomplete start of one. Raises ProxyHeaderError otherwise."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]) or V1_PREFIX.startswith(data[:6]):
        return None  # too short to tell yet
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(data) >= V1_MAX_BYTES or b"\n" in data[:V1_MAX_BYTES]:
            raise ProxyHeaderError("PROXY v1 line not ended by CRLF within 107 bytes")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    fields = line.split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(None, 1), end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {line[:60]!r}")
    family = ipaddress.IPv4Address if fields[1] == "TCP4" else ipaddress.IPv6Address
    source, _destination = _address(family, fields[2]), _address(family, fields[3])
    port = _port(fields[4])
    _port(fields[5])
    return ProxyHeader((source, port), 1), end + 2


def _address(family: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> str:
    try:
        return str(family(text))
    except ValueError:
        raise ProxyHeaderError(f"bad address {text[:45]!r} in PROXY v1 line") from None


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text[:10]!r} in PROXY v1 line")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < V2_FIXED_BYTES:
        return None
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise ProxyHeaderError(f"unsupported PROXY v2 version/command {version_command:#x}")
    total = V2_FIXED_BYTES + length
    if total > V2_MAX_BYTES:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes is over {V2_MAX_BYTES}")
    if len(data) < total:
        return None
    if version_command & 0xF == 0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(None, 2), total
    family = _V2_FAMILIES.get(family_protocol >> 4)
    if family is None:  # UNSPEC or UNIX: no address we can use
        return ProxyHeader(None, 2), total
    size, address_type = family
    if length < 2 * size + 4:
        raise ProxyHeaderError(f"PROXY v2 address block of {length} bytes is too short")
    source = str(address_type(data[V2_FIXED_BYTES : V2_FIXED_BYTES + size]))
    (port,) = struct.unpack_from("!H", data, V2_FIXED_BYTES + 2 * size)
    return ProxyHeader((source, port), 2), total
