"""One TCP client on an anyio stream: StreamingClient (the core, the outbox, the lifecycle)
reading a byte stream, after the PROXY header when there is one; and TCP keepalive."""

import contextlib
import logging
import socket
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream

from chatserver.adapters.connection_core import Refused
from chatserver.adapters.connection_core import TransportLimits as TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.settings import peer_and_host
from chatserver.adapters.serving.streaming import StreamingClient
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")


# A peer that stops answering is found within KEEPALIVE_IDLE + KEEPALIVE_COUNT * INTERVAL s.
KEEPALIVE_IDLE_SECONDS = 60
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 6


def set_keepalive(sock: Any) -> None:
    """Turn on TCP keepalive for an accepted socket: dead peers are found without traffic."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has TCP_KEEPALIVE instead
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    except (OSError, AttributeError) as error:
        log.debug("no TCP keepalive: %s", error)


class TcpClient(StreamingClient):
    """One TCP client on an anyio stream, a thin driver of ConnectionCore: what is read goes
    to the core, the frames it hands out are served in order, replies and pushes are joined
    into one write."""

    def __init__(self, stream: ByteStream, node: Node, limits: TransportLimits,
                 metrics: PrometheusMetrics | None = None,
                 trusted: TrustedProxies | None = None) -> None:
        self.stream = stream
        super().__init__(node, limits, metrics, *stream_peer(stream), trusted)
        self._early: list[bytes | Refused] = []  # frames that came with the PROXY header
        with contextlib.suppress(anyio.TypedAttributeLookupError):
            set_keepalive(stream.extra(anyio.abc.SocketAttribute.raw_socket))

    async def _send(self, frames: list[bytes]) -> bool:
        try:
            await self.stream.send(b"".join(frames))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def _close_transport(self) -> None:
        try:
            await self.stream.aclose()
        except (OSError, ssl.SSLError, anyio.BrokenResourceError) as error:
            log.debug("closing %s: %s", self.peer, error)

    async def read_proxy_header(self) -> bool:
        """--proxy-protocol: take the client's real address from the header the proxy sends
        first. False (and logged) if the peer is not a trusted proxy, or no valid header came
        within the limits."""
        core = self.core
        try:
            while core.awaiting_proxy_header:
                with anyio.move_on_after(core.deadline(False) - anyio.current_time()):
                    data = await self.stream.receive(self.limits.read_chunk)
                    self._early += core.receive(data, anyio.current_time())
                    continue
                core.check(anyio.current_time(), False)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            # A port probe (a health check, a load balancer's) looks just like this.
            log.debug("closing %s: gone before its PROXY header", self.peer)
            return False
        if core.closing is not None:
            self._verdict()
            return False
        self._proxied()
        return True

    async def _read_loop(self) -> None:
        early, self._early = self._early, []
        if (early or self.core.closing is not None) and not await self._take(early):
            return
        await super()._read_loop()

    async def _read(self) -> bytes | None:
        try:
            return await self.stream.receive(self.limits.read_chunk)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            return None


def stream_peer(stream: ByteStream) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    try:
        return peer_and_host(stream.extra(anyio.abc.SocketAttribute.remote_address))
    except (anyio.TypedAttributeLookupError, TypeError, IndexError):
        return "?", "?"
