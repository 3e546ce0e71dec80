"""Moved to chatserver.adapters.proxy_header (shared by every listener); kept for imports."""

from chatserver.adapters.proxy_header import (
    LOOPBACK,
    V1_MAX_BYTES,
    V1_PREFIX,
    V2_MAX_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    TrustedProxies,
    check_cidrs,
    parse_proxy_header,
)

__all__ = [
    "LOOPBACK",
    "V1_MAX_BYTES",
    "V1_PREFIX",
    "V2_MAX_BYTES",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderReader",
    "TrustedProxies",
    "check_cidrs",
    "parse_proxy_header",
]
