"""One WebSocket client: each text message it sends is one request frame, each frame we send
is one text message. StreamingClient serves it around a ConnectionCore fed whole messages: the
budget, frame limit, silence deadlines, outbound bound and close reasons are the core's, as on
TCP; what is ours is reading messages and the close codes."""

import asyncio
import contextlib
import logging
import socket
import struct

import anyio
from aiohttp import WSCloseCode, WSMsgType, web

from chatserver.adapters.connection_core import CLOSED_BY_CLIENT, Refused, TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.serving.settings import peer_and_host
from chatserver.adapters.serving.streaming import StreamingClient
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
        super().__init__(node, limits, metrics, peer, own_address, messages=True)
        self.close_code = WSCloseCode.OK

    def stop_reading(self) -> None:
        self.close_code = WSCloseCode.GOING_AWAY
        super().stop_reading()

    def _close_code(self) -> WSCloseCode:
        """The code the closing handshake gives: the core's verdict (frame too large, which
        has a reply, 1009; silence or flooding 1008), else what the transport set."""
        closing = self.core.closing
        if (self.close_code is not WSCloseCode.OK or closing is None
                or closing.reason == CLOSED_BY_CLIENT):
            return self.close_code
        if closing.reply is not None:
            return WSCloseCode.MESSAGE_TOO_BIG
        return WSCloseCode.POLICY_VIOLATION

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
                    code=self._close_code(), message=self.close_reason[:100].encode()
                )
            if not self.transport.is_closing():
                self.transport.close()

    async def _read(self) -> bytes | None:
        while True:
            message = await self.websocket.receive()
            if message.type in _ENDINGS:
                if message.type is WSMsgType.ERROR and _too_big(message.data):
                    self.close_code = WSCloseCode.MESSAGE_TOO_BIG
                return None
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = message.data
                return data if isinstance(data, bytes) else data.encode()

    def _feed(self, data: bytes, now: float) -> list[bytes | Refused]:
        return self.core.receive_message(data, now)


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
    return peer_and_host(transport.get_extra_info("peername"))
