"""One client connection: a reader that handles every frame a read yields, and an outbound
buffer drained by a single writer, bounded so a client that stops reading cannot grow memory."""

import contextlib
import logging
import socket
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream

from chatserver.adapters.connection_core import CLOSED_BY_CLIENT, Close, ConnectionCore, Refused
from chatserver.adapters.connection_core import TransportLimits as TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.tcp.requests import REFUSAL_LOG
from chatserver.adapters.tcp.streaming import StreamingClient
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


def log_close(peer: str, closing: Close | None) -> None:
    """Log why the server ends a connection (a client's own close is not news)."""
    if closing is None or closing.reason == CLOSED_BY_CLIENT:
        return
    if not closing.warning:
        log.info("closing %s: %s", peer, closing.reason)
    elif REFUSAL_LOG.allow():
        log.warning("closing %s: %s%s", peer, closing.reason, REFUSAL_LOG.skipped())


class TcpClient(StreamingClient):
    """One TCP client on an anyio stream, a thin driver of ConnectionCore: what is read goes
    to the core, the frames it hands out are served in order, replies and pushes are joined
    into one write."""

    def __init__(
        self,
        stream: ByteStream,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None = None,
        trusted: TrustedProxies | None = None,
    ) -> None:
        self.stream = stream
        peer, address = _peer(stream)
        super().__init__(node, limits, metrics, peer, address)
        self.core = ConnectionCore(limits, peer, address, anyio.current_time(), trusted)
        self._early: list[bytes | Refused] = []  # frames that came with the PROXY header
        self._cut_off = False  # for flooding, by a refusal (_limited)
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

    def _verdict(self) -> None:
        """The core decided the connection ends: log it and give the session that reason."""
        closing = self.core.closing
        if closing is not None and not self._reason_final:
            log_close(self.peer, closing)
            self.close_reason, self._reason_final = closing.reason, True

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
        if core.address != self.address:
            log.debug("connection from %s through %s", core.peer, self.peer)
        self.peer, self.address = core.peer, core.address
        self.connection.address = core.address
        return True

    async def _read_loop(self) -> None:
        early, self._early = self._early, []
        if (early or self.core.closing is not None) and not await self._take(early):
            return
        core = self.core
        while not self._closing:
            data = await self._receive()
            if data is None or not await self._take(core.receive(data, anyio.current_time())):
                return

    async def _receive(self) -> bytes | None:
        """The next bytes from the client; None when it is gone or has been silent too long."""
        core = self.core
        # Silence is counted from now: the time a request took to serve is not the client's.
        core.check(anyio.current_time(), self.connection.logged_in, busy=True)
        while True:
            deadline = core.deadline(self.connection.logged_in)
            try:
                with anyio.fail_after(deadline - anyio.current_time()):
                    return await self.stream.receive(self.limits.read_chunk)
            except TimeoutError:
                if core.check(anyio.current_time(), self.connection.logged_in) is not None:
                    self._verdict()
                    return None
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    OSError):
                core.receive_eof()
                return None

    def _limited(self) -> None:
        if self.core.limited(anyio.current_time()):
            self._cut_off = True  # _take serves no more of what was read

    async def _take(self, items: list[bytes | Refused]) -> bool:
        """Serve every frame the core handed out; False when the connection is to stop
        reading."""
        core = self.core
        self.dialect = core.dialect
        if not core.refused:
            self._refused = 0
        for item in items:
            if self._cut_off:
                break  # (ConnectionCore.limited): the rest is dropped
            if self._shutting_down:
                if type(item) is bytes:
                    self._refuse_stopping(item)
                continue
            self._handling = True
            try:
                rest = self._serve_item(item)
                if rest is not None:
                    await rest
            finally:
                self._handling = False
        if self._shutting_down:
            return False
        closing = core.closing
        if closing is not None:
            self._verdict()
            if closing.reply is not None:
                self._reply_behind(closing.reply)
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
