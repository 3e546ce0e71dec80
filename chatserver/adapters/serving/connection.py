"""What every driver's client object does the same way around its ConnectionCore, whatever
its event loop: the state, the frame queue (frames served at once as far as none has to wait;
the first that must, and every frame behind it, awaited in order by the connection's task),
the cut-off of a flooder, the PROXY header's address, and the end of the connection (in-flight
requests answered, the errno 8 reply behind them, on shutdown the wait to be released, a
bounded drain, the session's end, the close). A driver reads, writes, closes, keeps time and
runs the task in its own way (the hooks below)."""

import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import anyio

from chatserver.adapters.connection_core import (
    CLOSED_BY_SERVER,
    ConnectionCore,
    Refused,
    TransportLimits,
)
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.outbox import OutputQueue
from chatserver.adapters.serving.requests import Callback, RequestServing
from chatserver.adapters.serving.settings import ConnectionsPerAddress
from chatserver.adapters.wire.codec import Dialect
from chatserver.application.connection import Connection
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")


class ServedConnection(RequestServing):
    """One client connection's serving, transport-neutral (RequestServing, plus the output
    queue, the frame queue and the lifecycle)."""

    # The listener's count of refusals per address, once it counted this connection there.
    per_address: ConnectionsPerAddress | None = None
    _registered = True  # frames may be served (the asyncio driver: once admitted)

    def __init__(self, node: Node, limits: TransportLimits, metrics: PrometheusMetrics | None,
                 peer: str, address: str, now: float, trusted: TrustedProxies | None = None,
                 *, messages: bool = False) -> None:
        self.limits = limits
        self.metrics = metrics
        self.peer, self.address = peer, address
        self.core = ConnectionCore(limits, peer, address, now, trusted, messages=messages)
        self.connection = Connection(node, self, address)
        self._refused = 0
        self.dialect = Dialect.MODERN
        self.out = OutputQueue(limits.reply_backlog_bytes)
        self._frames: deque[bytes | Refused] = deque()  # for the connection's task, in order
        self._waiting: Coroutine[Any, Any, None] | None = None  # a frame's rest, to await
        self._busy = False  # the task is awaiting a request
        self._cut_off = False  # for flooding (_limited): what was read is not served
        self._closing = False  # no more requests are read
        self._closed = False  # nothing more is written (close(): what is unsent is dropped)
        self._shutting_down = False
        self._moved: anyio.Event | None = None  # set by _output_moved, for one who waits
        self._answered = anyio.Event()  # every request read is answered
        self._released = anyio.Event()  # shutdown: everyone is logged out
        self._start_serving()

    # What each driver does its own way.

    def _now(self) -> float:
        raise NotImplementedError

    def _cut(self) -> None:
        """_limited cut the client off: stop reading (the driver's way)."""

    async def _serve_reads(self) -> None:
        """Serve what is read, in order, until reading ends."""
        raise NotImplementedError

    def _end_reading(self) -> None:
        """Read no more (a request being served goes on)."""
        raise NotImplementedError

    def _flush_soon(self) -> None:
        """Have what is queued (frames, after-flush callbacks) written soon."""
        raise NotImplementedError

    def _flushed(self) -> bool:
        """Everything queued is written and its after-flush callbacks have run."""
        return not (self.out.frames or self.out.callbacks)

    def _finished(self) -> None:
        """What is queued is written (or the time for it is up)."""

    async def _close_transport(self) -> None:
        raise NotImplementedError

    # The Outbox port (push: RequestServing's).

    def _unsent(self) -> int:
        out = self.out  # OutputQueue.unsent, without the property's call: once per push
        return out.queued + out.held

    def after_flush(self, callback: Callback) -> None:
        self.out.callbacks.append(callback)
        self._flush_soon()

    def close(self, reason: str = CLOSED_BY_SERVER) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        if self._closed:
            return
        self._abort(reason)
        self._closing = self._closed = True
        self._closed_now()
        self._output_moved()

    def _closed_now(self) -> None:
        """close(): stop reading and writing (the driver's way)."""

    def _output_moved(self) -> None:
        """The driver wrote, or the transport took what it held, or callbacks ran: whoever
        waits on the output (_finish, a reader held back by a backlog) looks again."""
        moved = self._moved
        if moved is not None:
            self._moved = None
            moved.set()

    async def _output_moving(self) -> None:
        if self._moved is None:
            self._moved = anyio.Event()
        await self._moved.wait()

    # Server shutdown (log_out_everyone).

    def stop_reading(self) -> None:
        """Take no more requests (one being served goes on); stay open until release() to
        hear the rest."""
        self._shutting_down = True
        self.core.close("server stopping")
        self._end_reading()

    async def requests_done(self) -> None:
        """Wait until the request being served when stop_reading() came is answered."""
        await self._answered.wait()

    def release(self) -> None:
        """Everyone is logged out: send what is queued and close."""
        self._released.set()

    # Reading.

    def _proxied(self) -> None:
        """The PROXY header came: the client is the one it names."""
        core = self.core
        if core.address != self.address:
            log.debug("connection from %s through %s", core.peer, self.peer)
        self.peer, self.address = core.peer, core.address
        self.connection.address = core.address

    def _take_frames(self, items: "list[bytes | Refused]") -> bool:
        """Serve what the core handed out at once until one has to wait: that one and every
        frame behind it are left to _serve_queued, in order. True if anything was left."""
        core = self.core
        self.dialect = core.dialect
        if not core.refused:
            self._refused = 0
        if not items:
            return False
        frames = self._frames
        if (frames or self._waiting is not None or self._busy or not self._registered
                or self._shutting_down):
            frames.extend(items)
            return True
        for taken, item in enumerate(items, 1):
            if self._closed or self._cut_off:
                return False
            rest = self._serve_item(item)
            if rest is not None:
                self._waiting = rest
                self._busy = True
                frames.extend(items[taken:])
                return True
        return False

    async def _serve_queued(self) -> None:
        """Await what _take_frames left, in order; on shutdown, what is not started is
        refused (errno 11)."""
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            try:
                await waiting
            finally:
                self._busy = False
        frames = self._frames
        while frames and not self._closed:
            if self._shutting_down:
                for item in frames:
                    if type(item) is bytes:
                        self._refuse_stopping(item)
                frames.clear()
                return
            rest = self._serve_item(frames.popleft())
            if rest is not None:
                self._busy = True
                try:
                    await rest
                finally:
                    self._busy = False

    def _silent(self, busy: bool = False) -> bool:
        """Has the client been silent too long? busy: it waits on us, which counts as hearing
        from it. True (and logged) if the connection is to end."""
        if self.core.check(self._now(), self.connection.logged_in, busy) is None:
            return False
        self._verdict()
        return True

    def _limited(self) -> None:
        per_address = self.per_address
        flooding = per_address is not None and per_address.limited(self.address)
        if self.core.limited(self._now(), flooding):
            self._frames.clear()  # the rest is dropped
            self._cut_off = True
            self._cut()

    # The end.

    async def _lifecycle(self) -> None:
        """Serve until reading ends, then end the connection."""
        try:
            try:
                await self._serve_reads()
                closing = self.core.closing
                if closing is not None and closing.reply is not None and not self._closed:
                    self._reply_behind(closing.reply)  # errno 8, behind every other reply
                await self._in_flight_answered()  # pipelined requests: answered, then ended
            finally:
                self._answered.set()
            grace = self.limits.close_grace_seconds
            if self._shutting_down:
                with anyio.move_on_after(grace):
                    await self._released.wait()
            with anyio.move_on_after(grace):  # what is queued is written, for a bounded time
                while not self._closed and not self._flushed():
                    if self.out.frames or self.out.callbacks:
                        self._flush_soon()
                    await self._output_moving()
            self._finished()
        except Exception:
            log.exception("connection %s failed", self.peer)
        finally:
            if self._waiting is not None:  # cancelled before going on with it
                self._waiting.close()
                self._waiting = None
            with anyio.CancelScope(shield=True):
                try:
                    await self.connection.disconnect(self.close_reason)
                except Exception:
                    log.exception("ending the session of %s failed", self.peer)
                await self._close_transport()
