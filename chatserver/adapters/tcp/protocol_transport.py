"""The TCP transport on asyncio Protocols: one connection, driving its ConnectionCore (the
listener is protocol_server.py).

Bytes arrive in ``buffer_updated`` (into one receive buffer shared by the whole server: the
loop hands it out and takes it back within one callback) and go to the connection's
``ConnectionCore``, which cuts them into frames and says when the connection is to end and why.
Frames are served right there when they need not wait (most chats join the inbox batch being
gathered, without a task); the first that must wait, and every frame behind it, go to the
connection's task, an ordinary asyncio task that awaits them in order. Output is appended to a
list and written with one ``transport.write`` per connection per loop iteration. Silence is
watched by one timer per connection, re-armed only when it fires. Public asyncio API only.

Runs inside ``anyio.run`` on the asyncio backend (with or without uvloop).
"""

import asyncio
import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from chatserver.adapters.connection_core import (
    CLOSED_BY_SERVER,
    ConnectionCore,
    Refused,
    TransportLimits,
)
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.requests import (
    REFUSAL_LOG,
    Callback,
    RequestServing,
)
from chatserver.adapters.serving.settings import (
    TOO_MANY_CONNECTIONS,
    ConnectionsPerAddress,
    peer_and_host,
)
from chatserver.adapters.tcp.connection import set_keepalive
from chatserver.adapters.wire.codec import Dialect
from chatserver.application.connection import Connection
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")

# Frames read but not yet handled past which the client is not read from (a slow request).
_QUEUED_FRAMES_LIMIT = 256


class Listener(Protocol):
    """What a ProtocolClient needs of its server (protocol_server.ProtocolServer)."""

    node: Node
    limits: TransportLimits
    metrics: PrometheusMetrics | None
    trusted: TrustedProxies
    tls: ssl.SSLContext | None
    shutting_down: bool
    receive_buffer: memoryview
    per_address: ConnectionsPerAddress

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def admit(self, client: "ProtocolClient") -> bool: ...

    def admit_pending(self, client: "ProtocolClient", *, count_address: bool) -> bool: ...

    def flush_soon(self, client: "ProtocolClient") -> None: ...

    def run_batch(self, leading: Coroutine[Any, Any, None]) -> None: ...


class ProtocolClient(RequestServing, asyncio.BufferedProtocol):
    """Outbox of one TCP client, fed by the event loop's callbacks."""

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.limits = limits = server.limits
        self.metrics = server.metrics
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = self.address = "?"
        self.core = ConnectionCore(limits, "?", "?", self.loop.time())  # until the peer is known
        self.connection = Connection(server.node, self, self.address)
        self._refused = 0
        self.dialect = Dialect.MODERN
        # Output not yet handed to the transport, and whether the server will hand it over.
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_wanted = False
        # Bytes the transport held after our last write (an upper bound until it drains).
        self._buffered = 0
        self._callbacks: list[Callback] = []  # wait for the next write
        self._written_callbacks: list[Callback] = []  # written, wait for the buffer to drain
        self._ready_callbacks: deque[Callback] = deque()
        self._callback_task: asyncio.Task[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Frames for the connection's task (it is started when first needed), and the rest of
        # a request begun in the read callback that has to wait.
        self._frames: deque[bytes | Refused] = deque()
        self._waiting: Coroutine[Any, Any, None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False  # the task is awaiting a request
        self._tasks: set[asyncio.Task[None]] = set()  # pipelined requests' (RequestServing)
        self._closing = False  # no more requests are read
        self._closed = False  # nothing more is written (close(): what is unsent is dropped)
        self._lost = False  # the socket is gone
        self._shutting_down = False
        self._released: asyncio.Future[None] | None = None
        self._reading = True
        self._backlogged = False
        self._registered = False
        self.counted = False  # against its address, in the server's per_address
        self._timer: asyncio.TimerHandle | None = None
        self._requests_done = self.loop.create_future()  # the worker left its loop
        self.done = self.loop.create_future()
        self._start_serving()

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]],
               *args: Any) -> "asyncio.Task[None]":
        task = self.loop.create_task(function(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lead(self, leading: Coroutine[Any, Any, None]) -> None:
        self.server.run_batch(leading)

    # The Outbox port (push: RequestServing's).

    def _unsent(self) -> int:
        return self._out_bytes + self._buffered

    def after_flush(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._flush_soon()

    def close(self, reason: str = CLOSED_BY_SERVER) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        if self._closed:
            return
        self._abort(reason)
        self._closing = self._closed = True
        self._out.clear()
        self._out_bytes = 0
        self._stop_reading()
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Server shutdown.

    def stop_reading(self) -> None:
        """Take no more requests; stay open until release() to hear the rest."""
        self._shutting_down = True
        self.core.close("server stopping")
        if self._released is None:
            self._released = self.loop.create_future()
        self._end_reading()

    async def requests_done(self) -> None:
        """Wait until the request being served when stop_reading() came is answered."""
        if self._worker is not None and not self._worker.done():
            await asyncio.shield(self._requests_done)

    def release(self) -> None:
        """Everyone is logged out: send what is queued and close."""
        if self._released is None:
            self._released = self.loop.create_future()
        if not self._released.done():
            self._released.set_result(None)

    # asyncio.BufferedProtocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer, self.address = peer_and_host(transport.get_extra_info("peername"))
        self.connection.address = self.address
        server = self.server
        self.core = core = ConnectionCore(self.limits, self.peer, self.address,
                                          self.loop.time(), server.trusted)
        set_keepalive(transport.get_extra_info("socket"))
        if server.tls is not None:
            # Counted from now on, against its address and the cap on handshakes in progress:
            # a client cannot hold more descriptors by never finishing its handshake.
            if not server.admit_pending(self, count_address=True):
                self._refuse_pending(transport, "TLS handshake")
                return
            transport.pause_reading()
            self._spawn(self._start_tls, transport, server.tls)
        elif core.closing is not None:  # --proxy-protocol, and not from a trusted proxy
            self._abort_unopened()
        elif core.awaiting_proxy_header:
            if not server.admit_pending(self, count_address=False):
                self._refuse_pending(transport, "PROXY header")
                return
            self._arm_timer()
        else:
            self._open()

    def _refuse_pending(self, transport: asyncio.Transport, waiting_for: str) -> None:
        if REFUSAL_LOG.allow():
            log.warning("refusing %s: too many connections from there or waiting for a %s "
                        "(%d at most)%s", self.peer, waiting_for,
                        self.limits.pending_connections, REFUSAL_LOG.skipped())
        self.core.close(f"too many connections waiting for a {waiting_for}", abort=True)
        self._abort_unopened(logged=True)

    def _abort_unopened(self, logged: bool = False) -> None:
        """Never a client (not a trusted proxy, no valid PROXY header, too many): drop it."""
        if not logged:
            self._verdict()
        self._stop_timer()
        self._lost = self._closed = self._closing = True
        if self.transport is not None:
            self.transport.abort()
        if not self.done.done():
            self.done.set_result(None)

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            tls = await self.loop.start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=30.0
            )
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as error:
            log.info("TLS handshake failed: %s", error or type(error).__name__)
            transport.abort()
            self._lost = self._closed = True
            self.done.set_result(None)
            return
        except asyncio.CancelledError:
            transport.abort()
            raise
        if tls is None:  # the client went away during the handshake
            transport.abort()
            self.done.set_result(None)
            return
        self.transport = tls
        self._open()

    def _open(self) -> None:
        transport = self.transport
        assert transport is not None
        if not self.server.admit(self):
            log.warning("refusing %s: already %d connections from there", self.peer,
                        self.limits.connections_per_address)
            self._lost = self._closed = self._closing = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self._registered = True
        # Told when the kernel has taken every byte: that is when after_flush callbacks run.
        transport.set_write_buffer_limits(high=0, low=0)
        self._arm_timer()
        if self.server.shutting_down:
            self.stop_reading()
            self.release()
        elif self._frames or self.core.closing is not None:
            # Read before it was open: a TLS client's first request can come with the end of
            # the handshake, before start_tls() returns; no worker was woken for it then.
            self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        core = self.core
        data = bytes(self.server.receive_buffer[:nbytes])
        if core.awaiting_proxy_header:
            items = core.receive(data, self.loop.time())
            if core.closing is not None:
                self._abort_unopened()
            elif not core.awaiting_proxy_header:
                self._stop_timer()
                if core.address != self.address:
                    log.debug("connection from %s through %s", core.peer, self.peer)
                self.peer, self.address = core.peer, core.address
                self.connection.address = core.address
                self._open()
                if self._registered and not self._closing:
                    self._take(items)
            return
        if not self._closing:
            self._take(core.receive(data, self.loop.time()))

    def _take(self, items: "list[bytes | Refused]") -> None:
        """Serve what the core handed out: now, as far as nothing has to wait, the rest by
        the connection's task, in order."""
        core = self.core
        self.dialect = core.dialect
        if not core.refused:
            self._refused = 0
        if items:
            if (not self._frames and self._waiting is None and not self._busy
                    and self._registered):
                served = self._serve_inline(items)
                if served < len(items):
                    self._frames.extend(items[served:])
            else:
                self._frames.extend(items)
            if len(self._frames) > _QUEUED_FRAMES_LIMIT:
                self._update_reading()
            if self._frames:
                self._wake()
        if core.closing is not None:
            self._verdict()
            self._end_reading()

    def _limited(self) -> None:
        flooding = self.server.per_address.limited(self.address)
        if self.core.limited(self.loop.time(), flooding):
            self._frames.clear()
            self._take([])  # logged, and no more is read

    def _serve_inline(self, items: "list[bytes | Refused]") -> int:
        """Serve items in the read callback until one has to wait: that one is handed to the
        connection's task. How many were taken."""
        for taken, item in enumerate(items, 1):
            if self._closed:
                return len(items)
            rest = self._serve_item(item)
            if rest is not None:
                self._waiting = rest
                self._busy = True
                self._wake()
                return taken
        return len(items)

    def eof_received(self) -> bool:
        core = self.core
        unopened = core.awaiting_proxy_header
        core.receive_eof()
        if unopened:
            log.debug("closing %s: gone before its PROXY header", self.peer)  # a port probe
            self._abort_unopened(logged=True)
            return False
        self._end_reading()
        return True  # half closed: the replies to what was read still go out

    def connection_lost(self, exc: Exception | None) -> None:
        if self.core.awaiting_proxy_header:
            log.debug("closing %s: gone before its PROXY header", self.peer)  # a port probe
        self.core.receive_eof()
        self._stop_timer()
        self._lost = True
        self._buffered = 0
        self._flush_wanted = False
        self._end_reading()
        self._drained()
        if not self._registered and not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self._drained()

    # Reading.

    def _end_reading(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        self._wake()

    def _stop_reading(self) -> None:
        self._stop_timer()
        if self._reading and self.transport is not None and not self._lost:
            self._reading = False
            self.transport.pause_reading()

    def _update_reading(self) -> None:
        """Read while the client's replies and requests are not piling up."""
        if self._closing or self._lost or self.transport is None:
            return
        want = not self._backlogged and len(self._frames) <= _QUEUED_FRAMES_LIMIT
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_timer(self) -> None:
        deadline = self.core.deadline(self.connection.logged_in)
        if deadline == math.inf:  # looked at again later: a client that speaks may lose that
            deadline = self.loop.time() + self.limits.login_timeout_seconds
        self._timer = self.loop.call_at(deadline, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        core = self.core
        unopened = core.awaiting_proxy_header
        if self._closing and not unopened:
            return
        busy = self._busy or bool(self._frames or self._slots) or not self._reading
        if core.check(self.loop.time(), self.connection.logged_in, busy) is None:
            self._arm_timer()
        elif unopened:
            self._abort_unopened()
        else:
            self._verdict()
            self._end_reading()

    # Handling requests: the frames that have to wait, by one task per connection.

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)
        elif self._worker is None and self._registered:
            self._worker = self.loop.create_task(self._work())

    async def _work(self) -> None:
        try:
            try:
                await self._serve_waiting()
                closing = self.core.closing
                if closing is not None and closing.reply is not None and not self._closed:
                    self._reply_behind(closing.reply)  # errno 8, behind every other reply
                await self._in_flight_answered()  # pipelined requests: answered, then ended
                self._settle_requests()
                if self._shutting_down and self._released is not None:
                    await self._wait(self._released, self.limits.close_grace_seconds)
                await self._finish()
            except Exception:
                log.exception("connection %s failed", self.peer)
            finally:
                try:
                    await self.connection.disconnect(self.close_reason)
                except Exception:
                    log.exception("ending the session of %s failed", self.peer)
                self._close_transport()
        finally:
            if self._waiting is not None:  # cancelled before going on with it
                self._waiting.close()
                self._waiting = None
            self._settle_requests()
            if not self.done.done():
                self.done.set_result(None)

    async def _serve_waiting(self) -> None:
        """Await, in order, what the read callback could not serve, until reading ends."""
        frames = self._frames
        while True:
            waiting = self._waiting
            if waiting is not None:
                self._waiting = None
                try:
                    await waiting
                finally:
                    self._busy = False
            while frames and not self._closed:
                if self._shutting_down:
                    self._refuse_queued()
                    break
                rest = self._serve_item(frames.popleft())
                if rest is not None:
                    self._busy = True
                    try:
                        await rest
                    finally:
                        self._busy = False
            if self._closing or self._closed:
                return
            if not self._reading:
                self._update_reading()
            self._wakeup = self.loop.create_future()
            await self._wakeup

    def _settle_requests(self) -> None:
        if not self._requests_done.done():
            self._requests_done.set_result(None)

    def _refuse_queued(self) -> None:
        """Server shutdown: requests read but not started are answered errno 11."""
        for item in self._frames:
            if type(item) is bytes:
                self._refuse_stopping(item)
        self._frames.clear()

    async def _wait(self, future: "asyncio.Future[None]", seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), seconds)

    async def _finish(self) -> None:
        """Let what is queued be written, for a bounded time."""
        if self._closed or self._lost:
            return
        if not (self._out or self._callbacks or self._written_callbacks or self._buffered
                or self._ready_callbacks):
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        if self._out or self._callbacks:
            self._flush_soon()
        await self._wait(waiter, self.limits.close_grace_seconds)
        if self._callback_task is not None and not self._callback_task.done():
            await self._wait(
                asyncio.ensure_future(self._callback_task), self.limits.close_grace_seconds
            )

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._closed:
            transport.abort()
        else:
            if self._out:
                self._flush_now()
            transport.close()

    # Writing: one transport.write per connection per loop iteration.

    def _queue(self, frame: bytes) -> None:
        if self._closed:
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        if not self._flush_wanted:  # _flush_soon(), inline: once per reply
            self._flush_wanted = True
            self.server.flush_soon(self)

    def _flush_soon(self) -> None:
        if not self._flush_wanted:
            self._flush_wanted = True
            self.server.flush_soon(self)

    def flush(self) -> None:
        """The server's flush of this loop iteration: write what was queued (unless the
        connection was lost meanwhile)."""
        if self._flush_wanted:
            self._flush_wanted = False
            self._flush_now()

    def _flush_now(self) -> None:
        if self._callbacks:
            self._written_callbacks += self._callbacks
            self._callbacks = []
        transport = self.transport
        if self._out:
            out = self._out
            data = out[0] if len(out) == 1 else b"".join(out)
            self._out = []
            self._out_bytes = 0
            if self._lost or self._closed or transport is None:
                self._drained()
                return
            transport.write(data)
            self._buffered = transport.get_write_buffer_size()
        elif transport is not None and not self._lost:
            self._buffered = transport.get_write_buffer_size()
        else:
            self._buffered = 0
        if not self._buffered:
            if self._written_callbacks or self._backlogged or self._drain_waiters:
                self._drained()
        elif self._buffered > self.limits.reply_backlog_bytes and not self._backlogged:
            self._backlogged = True
            self._update_reading()

    def _drained(self) -> None:
        """The transport holds nothing more: run what waited for it, read again."""
        self._buffered = 0
        if self._written_callbacks:
            self._ready_callbacks.extend(self._written_callbacks)
            self._written_callbacks = []
            if self._callback_task is None:
                self._callback_task = self.loop.create_task(self._run_callbacks())
        if self._backlogged:
            self._backlogged = False
            self._update_reading()
        if self._drain_waiters and not self._out and not self._callbacks:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _run_callbacks(self) -> None:
        try:
            while self._ready_callbacks:
                callback = self._ready_callbacks.popleft()
                try:
                    await callback()
                except Exception:
                    log.exception("after-write step for %s failed", self.peer)
        finally:
            self._callback_task = None
