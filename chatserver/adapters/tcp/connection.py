"""One client connection: a reader that handles every frame a read yields, and an outbound
buffer drained by a single writer, bounded so a client that stops reading cannot grow memory."""

import contextlib
import logging
import math
import socket
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream

from chatserver.adapters.connection_core import TransportLimits as TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import (
    ProxyHeaderError,
    ProxyHeaderReader,
    TrustedProxies,
)
from chatserver.adapters.tcp.requests import REFUSAL_LOG
from chatserver.adapters.tcp.streaming import StreamingClient
from chatserver.adapters.wire.codec import Dialect, encode_frame_too_large
from chatserver.adapters.wire.framing import FrameSplitter
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")


def allowed_silence(limits: TransportLimits, splitter: FrameSplitter, logged_in: bool) -> float:
    """How long a TCP client may now stay silent before it is disconnected (inf: no limit).

    A client of the original server never PINGs, and sends nothing before its user types
    (PROTOCOL.md, legacy dialect (d)): neither it nor a connection that has not sent a byte yet
    (which may be one, at its menu) is closed for silence. TCP keepalive (set_keepalive) finds
    the dead ones; connections per address bound the rest."""
    if splitter.legacy or not splitter.heard:
        return math.inf
    return limits.idle_timeout_seconds if logged_in else limits.login_timeout_seconds


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
    """One TCP client on an anyio stream: frames split from the bytes read, replies and pushes
    joined into one write."""

    def __init__(
        self,
        stream: ByteStream,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.stream = stream
        super().__init__(node, limits, metrics, *_peer(stream))
        self.splitter = FrameSplitter(limits.frame_bytes)
        self._early = b""  # what came right after the PROXY header: the first request bytes
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

    async def read_proxy_header(self, trusted: TrustedProxies) -> bool:
        """--proxy-protocol: take the client's real address from the header the proxy sends
        first. False (and logged) if the peer is not a trusted proxy, or no valid header came
        within the limits."""
        if self.address not in trusted:
            if REFUSAL_LOG.allow():
                log.warning("closing %s: not a trusted proxy (--trusted-proxy %s)%s",
                            self.peer, trusted, REFUSAL_LOG.skipped())
            return False
        reader = ProxyHeaderReader()
        try:
            with anyio.fail_after(self.limits.proxy_header_seconds):
                parsed = None
                while parsed is None:
                    parsed = reader.feed(await self.stream.receive(self.limits.read_chunk))
        except ProxyHeaderError as error:
            log.info("closing %s: %s", self.peer, error)
            return False
        except TimeoutError:
            log.info("closing %s: no PROXY header within %.0f s", self.peer,
                     self.limits.proxy_header_seconds)
            return False
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            # A port probe (a health check, a load balancer's) looks just like this.
            log.debug("closing %s: gone before its PROXY header", self.peer)
            return False
        header, self._early = parsed
        if header.source is not None:
            proxy = self.peer
            host, port = header.source
            self.peer, self.address = f"{host}:{port}", host
            self.connection.address = host
            log.debug("connection from %s through %s", self.peer, proxy)
        return True

    async def _read_loop(self) -> None:
        if self._early and not await self._take(self._early):
            return
        self._early = b""
        while not self._closing:
            data = await self._receive()
            if data is None or not await self._take(data):
                return

    def _allowed_silence(self) -> float:
        return allowed_silence(self.limits, self.splitter, self.connection.logged_in)

    async def _receive(self) -> bytes | None:
        """The next bytes from the client; None when it is gone or has been silent too long."""
        silence = self._allowed_silence()
        try:
            with anyio.fail_after(silence):
                return await self.stream.receive(self.limits.read_chunk)
        except TimeoutError:
            self._silent_too_long(silence)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            pass
        return None

    async def _take(self, data: bytes) -> bool:
        """Serve every frame in data; False when the connection is to stop reading."""
        frames = self.splitter.feed(data)
        if frames and self.splitter.legacy:
            self.dialect = Dialect.LEGACY
        refused_limit = self.limits.refused_before_disconnect
        for frame in frames:
            if self._shutting_down:
                self._refuse_stopping(frame)
                continue
            await self._serve(frame)
            if self._refused > refused_limit:
                break  # flooding: the rest of what was read is not served
        if self._shutting_down:
            return False
        if self._flooding():
            return False
        if self.splitter.too_large:
            log.info("closing %s: frame over %d bytes", self.peer, self.limits.frame_bytes)
            self.close_reason = "frame too large"
            reply = encode_frame_too_large(self.dialect)
            if reply is not None:
                self._reply_behind(reply)
            return False
        if self._pending_bytes > self.limits.reply_backlog_bytes:
            await self._drained.wait()
        return True


def _peer(stream: ByteStream) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?", "?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}", str(address[0])
    return str(address), str(address)
