"""What the anyio TCP client and the WebSocket client share: a bounded outbox drained by one
writer task, and one lifecycle (read until done, on shutdown wait to be released, drain, end
the session, close). Each transport reads (_read_loop), writes (_send) and closes
(_close_transport) in its own way."""

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from chatserver.adapters.connection_core import CLOSED_BY_CLIENT, CLOSED_BY_SERVER
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.budget import RequestBudget
from chatserver.adapters.tcp.requests import RequestServing
from chatserver.adapters.wire.codec import Dialect, encode_event
from chatserver.application.connection import Connection
from chatserver.application.node import Node
from chatserver.domain.messages import Event

if TYPE_CHECKING:  # the limits live beside TcpClient, which imports this module
    from chatserver.adapters.tcp.connection import TransportLimits

log = logging.getLogger("chatserver.tcp")

Callback = Callable[[], Awaitable[None]]


class StreamingClient(RequestServing):
    """One client connection on anyio: the Outbox port, the writer and the lifecycle."""

    def __init__(
        self,
        node: Node,
        limits: "TransportLimits",
        metrics: PrometheusMetrics | None,
        peer: str,
        address: str,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.peer, self.address = peer, address
        self.connection = Connection(node, self, address)
        self.budget = RequestBudget(limits.requests_per_second, limits.request_burst)
        self._refused = 0
        self.close_reason = CLOSED_BY_CLIENT
        self._reason_final = False  # close_reason is the true one (the first given holds)
        self.dialect = Dialect.MODERN
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
        self._start_serving()

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(function, *args)

    # What each transport does its own way.

    async def _read_loop(self) -> None:
        raise NotImplementedError

    async def _send(self, frames: list[bytes]) -> bool:
        """Write these frames (each ended by LF); False if the connection is gone."""
        raise NotImplementedError

    async def _close_transport(self) -> None:
        raise NotImplementedError

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
            self.close(f"client not reading ({self._pending_bytes} bytes unsent)")
            return False
        self._queue(frame)
        return True

    def after_flush(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._wake.set()

    def close(self, reason: str = CLOSED_BY_SERVER) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        if not self._reason_final and not self._closed:
            self.close_reason, self._reason_final = reason, True
        self._closing = self._closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    # Server shutdown.

    def stop_reading(self) -> None:
        """Take no more requests (one being served goes on), stay open until release() to
        hear the rest."""
        self._closing = self._shutting_down = True
        if not self._reason_final:
            self.close_reason, self._reason_final = "server stopping", True
        if not self._handling:
            self._read_scope.cancel()

    async def requests_done(self) -> None:
        """Wait until the request being served when stop_reading() came is answered."""
        await self._reading_done.wait()

    def release(self) -> None:
        """Everyone is logged out: send what is queued and close."""
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
                    await self._in_flight_answered()  # pipelined requests
                finally:
                    self._reading_done.set()
                if self._shutting_down:
                    with anyio.move_on_after(self.limits.close_grace_seconds):
                        await self._released.wait()
                await self._finish()
                tg.cancel_scope.cancel()
        except Exception:
            log.exception("connection %s failed", self.peer)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.connection.disconnect(self.close_reason)
                except Exception:
                    log.exception("ending the session of %s failed", self.peer)
                await self._close_transport()

    async def _serve(self, frame: bytes) -> None:
        """Serve one request, marked as in hand so that shutdown lets it finish."""
        self._handling = True
        try:
            await self._handle(frame)
        finally:
            self._handling = False

    def _allowed_silence(self) -> float:
        """How long the client may now stay silent: before logging in, and after."""
        if self.connection.logged_in:
            return self.limits.idle_timeout_seconds
        return self.limits.login_timeout_seconds

    def _silent_too_long(self, silence: float) -> None:
        what = "idle" if self.connection.logged_in else "not logged in"
        log.info("closing %s: %s for %.0f s", self.peer, what, silence)
        self.close_reason = f"{what} for {silence:.0f} s"

    def _queue(self, frame: bytes) -> None:
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if not self._pending and not self._callbacks:
                continue
            frames, callbacks = self._pending, self._callbacks
            self._pending, self._pending_bytes, self._callbacks = [], 0, []
            if frames and not await self._send(frames):
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
