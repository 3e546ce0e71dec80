"""One WebSocket client: each text message it sends is one request frame, each frame we send
is one text message. Requests, limits and the outbound bound are those of the TCP transport."""

import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.budget import RequestBudget
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.requests import RequestServing
from chatserver.adapters.wire.codec import Dialect, encode_event, encode_frame_too_large
from chatserver.application.connection import Connection
from chatserver.application.node import Node
from chatserver.domain.messages import Event

log = logging.getLogger("chatserver.web")

Callback = Callable[[], Awaitable[None]]


class WebSocketClient(RequestServing):
    """Outbox of one WebSocket client, and the loops that move its messages."""

    def __init__(
        self,
        websocket: ServerConnection,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None = None,
        address: str | None = None,
    ) -> None:
        self.websocket = websocket
        self.limits = limits
        self.metrics = metrics
        self.peer, self.address = _peer(websocket)
        if address is not None:
            self.peer, self.address = f"{address} (via {self.peer})", address
        self.connection = Connection(node, self, self.address)
        self.budget = RequestBudget(limits.requests_per_second, limits.request_burst)
        self._refused = 0
        self.dialect = Dialect.MODERN  # the legacy dialect is a TCP matter
        self.close_reason = "connection closed by the client"
        self.close_code = CloseCode.NORMAL_CLOSURE
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._callbacks: list[Callback] = []
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._closing = False  # no more requests are read
        self._closed = False  # nothing more is written
        self._handling = False  # a request is being served: shutdown lets it finish
        self._shutting_down = False
        self._released = anyio.Event()
        self._read_scope = anyio.CancelScope()
        self._reading_done = anyio.Event()
        self._task_group: TaskGroup | None = None

    # The Outbox port.

    def push(self, event: Event) -> bool:
        if self._closed:
            return False
        frame = encode_event(event, self.dialect)
        if frame is None:
            return True
        if self._pending_bytes + len(frame) > self.limits.outbound_bytes:
            log.warning("closing %s: %d bytes unsent, client not reading", self.peer,
                        self._pending_bytes)
            self.close_reason = "client not reading"
            self.close_code = CloseCode.POLICY_VIOLATION
            self.close()
            return False
        self._queue(frame)
        return True

    def after_flush(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._wake.set()

    def close(self) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        self._closing = self._closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    # Server shutdown, as for TCP clients.

    def stop_reading(self) -> None:
        """Take no more requests (one being served goes on); stay open until release()."""
        self._closing = self._shutting_down = True
        self.close_code = CloseCode.GOING_AWAY
        self.close_reason = "server stopping"
        if not self._handling:
            self._read_scope.cancel()

    async def requests_done(self) -> None:
        """Wait until the request being served when stop_reading() came is answered."""
        await self._reading_done.wait()

    def release(self) -> None:
        self._released.set()

    # The loops.

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._write_loop)
                try:
                    with self._read_scope:
                        await self._read_loop()
                finally:
                    self._reading_done.set()
                if self._shutting_down:
                    with anyio.move_on_after(self.limits.close_grace_seconds):
                        await self._released.wait()
                await self._finish()
                tg.cancel_scope.cancel()
        except Exception:
            log.exception("websocket connection %s failed", self.peer)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.connection.disconnect(self.close_reason)
                except Exception:
                    log.exception("ending the session of %s failed", self.peer)
                if self._closed:
                    # Cut off (e.g. not reading): no closing handshake to wait on, and what
                    # the kernel still holds for it is dropped too (it was stored).
                    _reset(self.websocket)
                else:
                    with anyio.move_on_after(self.limits.close_grace_seconds):
                        await self.websocket.close(self.close_code, self.close_reason[:100])

    async def _read_loop(self) -> None:
        while not self._closing:
            silence = (
                self.limits.idle_timeout_seconds
                if self.connection.logged_in
                else self.limits.login_timeout_seconds
            )
            try:
                with anyio.fail_after(silence):
                    message = await self.websocket.recv(decode=False)
            except TimeoutError:
                what = "idle" if self.connection.logged_in else "not logged in"
                log.info("closing %s: %s for %.0f s", self.peer, what, silence)
                self.close_reason = f"{what} for {silence:.0f} s"
                self.close_code = CloseCode.POLICY_VIOLATION
                return
            except ConnectionClosed:
                return
            frame = message if isinstance(message, bytes) else message.encode()
            if len(frame) > self.limits.frame_bytes:
                log.info("closing %s: frame over %d bytes", self.peer, self.limits.frame_bytes)
                self.close_reason = "frame too large"
                self.close_code = CloseCode.MESSAGE_TOO_BIG
                reply = encode_frame_too_large(self.dialect)
                if reply is not None:
                    self._queue(reply)
                return
            self._handling = True
            try:
                await self._handle(frame)
            finally:
                self._handling = False
            if self._shutting_down:
                return
            if self._flooding():
                self.close_code = CloseCode.POLICY_VIOLATION
                return
            if self._pending_bytes > self.limits.reply_backlog_bytes:
                await self._drained.wait()

    def _queue(self, frame: bytes) -> None:
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            frames, callbacks = self._pending, self._callbacks
            self._pending, self._pending_bytes, self._callbacks = [], 0, []
            try:
                for frame in frames:
                    # One frame per message, without the LF that ends it on TCP.
                    await self.websocket.send(memoryview(frame)[:-1], text=True)
            except ConnectionClosed:
                self.close()
                return
            if not self._pending:
                self._drained.set()
                self._drained = anyio.Event()
            for callback in callbacks:
                try:
                    await callback()
                except Exception:
                    log.exception("after-write step for %s failed", self.peer)

    async def _finish(self) -> None:
        """Let the writer send what is queued, for a bounded time."""
        with anyio.move_on_after(self.limits.close_grace_seconds):
            while self._pending or self._callbacks:
                await self._drained.wait()


def _reset(websocket: ServerConnection) -> None:
    sock = websocket.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    websocket.transport.abort()


def _peer(websocket: ServerConnection) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    address = websocket.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}", str(address[0])
    return str(address), str(address)
