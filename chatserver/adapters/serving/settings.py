"""Budgets of a client (requests per second, connections per address), and the settings
every listener is built with (TCP on asyncio or anyio, WebSocket)."""

import ssl
import time
from typing import Any

from chatserver.adapters.connection_core import TokenBucket, TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.wire.codec import encode_refusal
from chatserver.application.node import Node
from chatserver.application.throttle import address_key

# What a client over its address's connection limit is told before it is closed.
TOO_MANY_CONNECTIONS = encode_refusal("too many connections from your address")


def peer_and_host(address: Any) -> tuple[str, str]:
    """A socket's peer address as the client's host:port for logs, and its host for limits
    per address ("?" when the socket does not say)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}", str(address[0])
    if address is None:
        return "?", "?"
    return str(address), str(address)


class RequestBudget(TokenBucket):
    """A TokenBucket that reads the clock itself, only when it runs dry (for budgets kept
    outside a ConnectionCore: log lines, the WebSocket client's frames)."""

    def __init__(self, per_second: float, burst: int) -> None:
        super().__init__(per_second, burst, time.monotonic())

    def spend(self, now: float | None = None) -> bool:
        """Take one request's token; False if none is left (the request is refused)."""
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return super().spend(time.monotonic() if now is None else now)


class ConnectionsPerAddress:
    """Open connections counted by client address, against a limit (0: no limit, and no
    count of refusals either: behind a proxy, where all share one address); and requests
    refused by a limit of the server's, over all the connections of an address (limited())."""

    _MAX_KEYS = 100_000  # bounded: under attack from everywhere the oldest are forgotten

    def __init__(self, limit: int, *, limited_burst: int = 200,
                 limited_per_second: float = 4.0) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}
        self.limited_burst, self.limited_per_second = limited_burst, limited_per_second
        self._limited: dict[str, TokenBucket] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection from address; False (and not counted) if over the limit.
        IPv6 addresses are counted by their /64."""
        address = address_key(address)
        count = self.open.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self.open[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        address = address_key(address)
        count = self.open[address] - 1
        if count:
            self.open[address] = count
        else:
            del self.open[address]

    def limited(self, address: str) -> bool:
        """One more request from address was refused by a limit of the server's (errno 9,
        "try again later"). True while the address is flooding: it has had more of those
        than limited_burst, less what refills at limited_per_second, over all its connections
        (300 connections resending a refused REG a few times a second each, or reconnecting
        to resend it). Its connections are then cut off at their next such refusal
        (ConnectionCore.limited), while its requests that are served stay served."""
        if not self.limit:
            return False
        key = address_key(address)
        now = time.monotonic()
        buckets = self._limited
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._MAX_KEYS:
                for stale in list(buckets)[: self._MAX_KEYS // 10]:
                    del buckets[stale]
            bucket = buckets[key] = TokenBucket(self.limited_per_second, self.limited_burst,
                                                now)
        return not bucket.spend(now)


class ListenerSettings:
    """What every listener is built with: the node, where to listen, the limits, TLS,
    metrics, and the count of connections per address (shared with the node's other
    listeners when given: the limit is per client)."""

    def __init__(
        self,
        node: Node,
        host: str,
        port: int,
        limits: TransportLimits,
        *,
        tls: ssl.SSLContext | None = None,
        metrics: PrometheusMetrics | None = None,
        per_address: ConnectionsPerAddress | None = None,
    ) -> None:
        self.node = node
        self.host, self.port = host, port
        self.limits = limits
        self.tls = tls
        self.metrics = metrics
        self.per_address = per_address or ConnectionsPerAddress(limits.connections_per_address)
        self.trusted = TrustedProxies(limits.trusted_proxies)
