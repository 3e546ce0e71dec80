"""Serving one connection on anyio around a ConnectionCore, for the anyio TCP client and the
WebSocket client: what is read goes to the core (its budget, frame limit, silence deadlines and
close reasons), the frames it hands out are served in order, replies and pushes go to a bounded
outbox drained by one writer task, and one lifecycle (read until done, on shutdown wait to be
released, drain, end the session, close). Each transport reads (_read), feeds the core
(_feed), writes (_send) and closes (_close_transport) in its own way."""

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from chatserver.adapters.connection_core import (
    CLOSED_BY_SERVER,
    ConnectionCore,
    Refused,
    TransportLimits,
)
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.requests import Callback, RequestServing
from chatserver.adapters.serving.settings import ConnectionsPerAddress
from chatserver.adapters.wire.codec import Dialect
from chatserver.application.connection import Connection
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")


class StreamingClient(RequestServing):
    """One client connection on anyio: the core, the Outbox port, the writer and the
    lifecycle. messages: frames come whole, one per message (WebSocket), not cut from a byte
    stream."""

    def __init__(
        self,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None,
        peer: str,
        address: str,
        trusted: TrustedProxies | None = None,
        *,
        messages: bool = False,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.peer, self.address = peer, address
        self.core = ConnectionCore(limits, peer, address, anyio.current_time(), trusted,
                                   messages=messages)
        self.connection = Connection(node, self, address)
        self._refused = 0
        self._cut_off = False  # for flooding, by a refusal (_limited)
        # The listener's count of refusals per address, once it counted this connection there.
        self.per_address: ConnectionsPerAddress | None = None
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

    async def _read(self) -> bytes | None:
        """The next bytes (or message) from the client; None once it is gone."""
        raise NotImplementedError

    def _feed(self, data: bytes, now: float) -> list[bytes | Refused]:
        """Hand what _read returned to the core: the frames to serve."""
        return self.core.receive(data, now)

    async def _send(self, frames: list[bytes]) -> bool:
        """Write these frames (each ended by LF); False if the connection is gone."""
        raise NotImplementedError

    async def _close_transport(self) -> None:
        raise NotImplementedError

    # The Outbox port (push: RequestServing's).

    def _unsent(self) -> int:
        return self._pending_bytes

    def after_flush(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._wake.set()

    def close(self, reason: str = CLOSED_BY_SERVER) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        if self._closed:
            return
        self._abort(reason)
        self._closing = self._closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    # Server shutdown.

    def stop_reading(self) -> None:
        """Take no more requests (one being served goes on), stay open until release() to
        hear the rest."""
        self._closing = self._shutting_down = True
        self.core.close("server stopping")
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

    async def _read_loop(self) -> None:
        while not self._closing:
            data = await self._receive()
            if data is None or not await self._take(self._feed(data, anyio.current_time())):
                return

    async def _receive(self) -> bytes | None:
        """The next read; None when the client is gone or has been silent too long."""
        core = self.core
        # Silence is counted from now: the time a request took to serve is not the client's.
        core.check(anyio.current_time(), self.connection.logged_in, busy=True)
        while True:
            deadline = core.deadline(self.connection.logged_in)
            try:
                with anyio.fail_after(deadline - anyio.current_time()):
                    data = await self._read()
            except TimeoutError:
                if core.check(anyio.current_time(), self.connection.logged_in) is not None:
                    self._verdict()
                    return None
                continue
            if data is None:
                core.receive_eof()
            return data

    def _limited(self) -> None:
        per_address = self.per_address
        flooding = per_address is not None and per_address.limited(self.address)
        if self.core.limited(anyio.current_time(), flooding):
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
                self.core.receive_eof()  # the peer is gone: its end, not the server's
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
