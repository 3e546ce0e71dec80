"""One WebSocket client: each text message it sends is one request frame, each frame we send
is one text message. Requests, limits and the outbound bound are those of the TCP transport."""

import asyncio
import contextlib
import logging
import socket
import struct

import anyio
from aiohttp import WSCloseCode, WSMsgType, web

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.streaming import StreamingClient
from chatserver.adapters.wire.codec import encode_frame_too_large
from chatserver.application.node import Node

log = logging.getLogger("chatserver.web")

# What ends the read loop: the peer's close, or the connection failing.
_ENDINGS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class WebSocketClient(StreamingClient):
    """One WebSocket client: one frame per message each way, the legacy dialect not offered."""

    def __init__(
        self,
        websocket: web.WebSocketResponse,
        transport: asyncio.BaseTransport,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None = None,
        address: str | None = None,
    ) -> None:
        self.websocket = websocket
        self.transport = transport
        peer, own_address = peer_address(transport)
        if address is not None:
            peer, own_address = f"{address} (via {peer})", address
        super().__init__(node, limits, metrics, peer, own_address)
        self.close_code = WSCloseCode.OK

    def stop_reading(self) -> None:
        self.close_code = WSCloseCode.GOING_AWAY
        self.close_reason = "server stopping"
        super().stop_reading()

    async def _send(self, frames: list[bytes]) -> bool:
        try:
            for frame in frames:
                # One frame per message, without the LF that ends it on TCP. The writer
                # waits for the kernel buffer to drain: that is the backpressure.
                await self.websocket.send_frame(frame[:-1], WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return False
        return not self.websocket.closed

    async def _close_transport(self) -> None:
        if self._closed:
            # Cut off (e.g. not reading): no closing handshake to wait on, and what the
            # kernel still holds for it is dropped too (it was stored).
            _reset(self.transport)
        else:
            with anyio.move_on_after(self.limits.close_grace_seconds):
                await self.websocket.close(
                    code=self.close_code, message=self.close_reason[:100].encode()
                )
            if not self.transport.is_closing():
                self.transport.close()

    async def _read_loop(self) -> None:
        while not self._closing:
            silence = self._allowed_silence()
            try:
                with anyio.fail_after(silence):
                    message = await self.websocket.receive()
            except TimeoutError:
                self._silent_too_long(silence)
                self.close_code = WSCloseCode.POLICY_VIOLATION
                return
            if message.type in _ENDINGS:
                if message.type is WSMsgType.ERROR and _too_big(message.data):
                    self.close_code = WSCloseCode.MESSAGE_TOO_BIG
                return
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            data = message.data
            frame = data if isinstance(data, bytes) else data.encode()
            if len(frame) > self.limits.frame_bytes:
                log.info("closing %s: frame over %d bytes", self.peer, self.limits.frame_bytes)
                self.close_reason = "frame too large"
                self.close_code = WSCloseCode.MESSAGE_TOO_BIG
                reply = encode_frame_too_large(self.dialect)
                if reply is not None:
                    self._reply_behind(reply)
                return
            await self._serve(frame)
            if self._shutting_down:
                return
            if self._flooding():
                self.close_code = WSCloseCode.POLICY_VIOLATION
                return
            if self._pending_bytes > self.limits.reply_backlog_bytes:
                await self._drained.wait()


def _too_big(error: object) -> bool:
    return getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG


def _reset(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


def peer_address(transport: asyncio.BaseTransport) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}", str(address[0])
    return str(address), str(address)
