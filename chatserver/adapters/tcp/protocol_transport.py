"""The same transport as TcpServer/TcpClient, on asyncio Protocols instead of anyio streams.

Behaviour and limits are those of ``connection.py`` and ``server.py``; what differs is the cost
per message. Bytes arrive in ``buffer_updated`` (into one receive buffer shared by the whole
server: the loop hands it out and takes it back within one callback), are cut into frames, and
the frames go to one task per connection, created on the first frame and woken once per read.
Output is appended to a list and written with one ``transport.write`` per connection per loop
iteration. Silence is watched by one timer per connection that is re-armed only when it fires.

Runs inside ``anyio.run`` on the asyncio backend (with or without uvloop).
"""

import asyncio
import contextlib
import logging
import math
import os
import ssl
from asyncio.tasks import _enter_task, _leave_task
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import anyio
from anyio.abc import TaskStatus

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import (
    ProxyHeaderError,
    ProxyHeaderReader,
    TrustedProxies,
)
from chatserver.adapters.tcp.budget import ConnectionsPerAddress, RequestBudget
from chatserver.adapters.tcp.connection import TransportLimits, allowed_silence, set_keepalive
from chatserver.adapters.tcp.requests import REFUSAL_LOG, RequestServing, log_out_everyone
from chatserver.adapters.wire.codec import (
    Dialect,
    encode_event,
    encode_frame_too_large,
    encode_refusal,
)
from chatserver.adapters.wire.framing import FrameSplitter
from chatserver.application.connection import Connection
from chatserver.application.node import Node
from chatserver.domain.messages import Event

log = logging.getLogger("chatserver.tcp")

Callback = Callable[[], Awaitable[None]]

TOO_MANY_CONNECTIONS = encode_refusal("too many connections from your address")

# Frames read but not yet handled past which the client is not read from (a slow request).
_QUEUED_FRAMES_LIMIT = 256


class _TooLarge:
    """Marks, in a connection's frame queue, where the frame that was too long began."""


_TOO_LARGE = _TooLarge()

# Handle requests right in the read callback, as the connection's (parked) task, and hand one
# to that task only if it has to wait for something; CHATSERVER_ASYNCIO_INLINE=0 turns it off.
_INLINE = os.environ.get("CHATSERVER_ASYNCIO_INLINE", "1") != "0"


class ProtocolClient(RequestServing, asyncio.BufferedProtocol):
    """Outbox of one TCP client, fed by the event loop's callbacks."""

    def __init__(self, server: "ProtocolServer") -> None:
        self.server = server
        self.limits = limits = server.limits
        self.metrics = server.metrics
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = self.address = "?"
        self.connection = Connection(server.node, self, self.address)
        self.budget = RequestBudget(limits.requests_per_second, limits.request_burst)
        self._refused = 0
        self.close_reason = "connection closed by the client"
        self.splitter = FrameSplitter(limits.frame_bytes)
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
        # Frames waiting for the worker task, which is started by the first one.
        self._frames: deque[bytes | _TooLarge] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False
        # A request started in the read callback that has to wait: the task goes on with it.
        self._suspended: Coroutine[Any, Any, None] | None = None
        self._closing = False  # no more requests are read
        self._closed = False  # nothing more is written (close(): what is unsent is dropped)
        self._lost = False  # the socket is gone
        self._shutting_down = False
        self._released: asyncio.Future[None] | None = None
        self._reading = True
        self._backlogged = False
        self._registered = False
        self.counted = False  # against its address, in the server's per_address
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # --proxy-protocol: the header is read before anything else, within a time limit.
        self._proxy_reader: ProxyHeaderReader | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._requests_done = self.loop.create_future()  # the worker left its loop
        self.done = self.loop.create_future()
        self._start_serving()

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]],
               *args: Any) -> "asyncio.Task[None]":
        return self.loop.create_task(function(*args))

    def _lead(self, leading: Coroutine[Any, Any, None]) -> None:
        self.server.run_batch(leading)

    # The Outbox port.

    def push(self, event: Event) -> bool:
        if self._closed:
            return False
        frame = encode_event(event, self.dialect)
        if frame is None:
            return True
        out_bytes = self._out_bytes + len(frame)
        if out_bytes + self._buffered > self.limits.outbound_bytes:
            unsent = self._out_bytes + self._buffered
            log.warning("closing %s: %d bytes unsent, client not reading", self.peer, unsent)
            self.close_reason = "client not reading"
            self.close()
            return False
        # _queue(frame), inline: a group message comes here once per member.
        self._out.append(frame)
        self._out_bytes = out_bytes
        if not self._flush_wanted:
            self._flush_wanted = True
            self.server.flush_soon(self)
        return True

    def after_flush(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._flush_soon()

    def close(self) -> None:
        """End the connection at once: what is unsent is dropped, the session ends."""
        if self._closed:
            return
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
        self.peer, self.address = _peer(transport.get_extra_info("peername"))
        self.connection.address = self.address
        set_keepalive(transport.get_extra_info("socket"))
        if self.server.tls is not None:
            # Counted from now on, against its address and the cap on handshakes in progress:
            # a client cannot hold more descriptors by never finishing its handshake.
            if not self.server.admit_pending(self, count_address=True):
                self._refuse_pending(transport, "TLS handshake")
                return
            transport.pause_reading()
            self.loop.create_task(self._start_tls(transport, self.server.tls))
        elif self.limits.proxy_protocol:
            if self.address not in self.server.trusted:
                if REFUSAL_LOG.allow():
                    log.warning("closing %s: not a trusted proxy (--trusted-proxy %s)%s",
                                self.peer, self.server.trusted, REFUSAL_LOG.skipped())
                self._lost = self._closed = self._closing = True
                transport.abort()
                self.done.set_result(None)
                return
            if not self.server.admit_pending(self, count_address=False):
                self._refuse_pending(transport, "PROXY header")
                return
            self._proxy_reader = ProxyHeaderReader()
            self._header_timer = self.loop.call_later(
                self.limits.proxy_header_seconds, self._no_proxy_header
            )
        else:
            self._open()

    def _refuse_pending(self, transport: asyncio.Transport, waiting_for: str) -> None:
        if REFUSAL_LOG.allow():
            log.warning("refusing %s: too many connections from there or waiting for a %s "
                        "(%d at most)%s", self.peer, waiting_for,
                        self.limits.pending_connections, REFUSAL_LOG.skipped())
        self._lost = self._closed = self._closing = True
        transport.abort()
        self.done.set_result(None)

    def _read_proxy_header(self, data: bytes) -> None:
        """--proxy-protocol: the client's real address comes first, from the proxy."""
        assert self._proxy_reader is not None
        try:
            parsed = self._proxy_reader.feed(data)
        except ProxyHeaderError as error:
            self._refuse_unproxied(str(error))
            return
        if parsed is None:
            return
        self._stop_waiting_for_header()
        header, rest = parsed
        if header.source is not None:
            proxy = self.peer
            host, port = header.source
            self.peer, self.address = f"{host}:{port}", host
            self.connection.address = host
            log.debug("connection from %s through %s", self.peer, proxy)
        self._open()
        if rest and self._registered and not self._closing:
            self._take(rest)

    def _no_proxy_header(self) -> None:
        self._header_timer = None
        if self._proxy_reader is not None:
            self._refuse_unproxied(
                f"no PROXY header within {self.limits.proxy_header_seconds:.0f} s"
            )

    def _stop_waiting_for_header(self) -> None:
        self._proxy_reader = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse_unproxied(self, reason: str) -> None:
        log.info("closing %s: %s", self.peer, reason)
        self._stop_waiting_for_header()
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
        self._last_activity = self.loop.time()
        self._arm_timer(min(self.limits.login_timeout_seconds, self.limits.idle_timeout_seconds))
        if self.server.shutting_down:
            self.stop_reading()
            self.release()
        elif self._frames:
            # Read before it was open: a TLS client's first request can come with the end of
            # the handshake, before start_tls() returns; no worker was woken for it then.
            self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._proxy_reader is not None:
            self._read_proxy_header(bytes(self.server.receive_buffer[:nbytes]))
            return
        if self._closing:
            return
        self._take(bytes(self.server.receive_buffer[:nbytes]))

    def _take(self, data: bytes) -> None:
        """Cut what was read into frames and serve them (now, or by the worker task)."""
        self._last_activity = self.loop.time()
        splitter = self.splitter
        frames = splitter.feed(data)
        if frames and splitter.legacy:
            self.dialect = Dialect.LEGACY
        if (frames and not self._frames and not splitter.too_large and _INLINE
                and self._wakeup is not None and self._suspended is None):
            self._handle_inline(frames)
            return
        self._frames.extend(frames)
        if splitter.too_large:
            self._frames.append(_TOO_LARGE)
            self._end_reading()
        elif len(self._frames) > _QUEUED_FRAMES_LIMIT:
            self._update_reading()
        if self._frames:
            self._wake()

    def _handle_inline(self, frames: list[bytes]) -> None:
        """Handle what was read now, as the connection's task (parked, waiting for frames);
        what is left when one has to wait, or must not be served yet, goes to the task."""
        worker = self._worker
        assert worker is not None
        refused_limit = self.limits.refused_before_disconnect
        served = 0
        _enter_task(self.loop, worker)
        try:
            for frame in frames:
                if self._closed:
                    break
                served += 1
                rest = self._serve_now(frame)
                if rest is not None:
                    self._suspended = rest
                    self._busy = True
                    break
                if self._refused > refused_limit:
                    break
        finally:
            _leave_task(self.loop, worker)
        if served < len(frames):
            self._frames.extend(frames[served:])
            if len(self._frames) > _QUEUED_FRAMES_LIMIT:
                self._update_reading()
        if (self._frames or self._suspended is not None or self._closing or self._closed
                or self._refused > refused_limit):
            self._wake()

    def eof_received(self) -> bool:
        if self._proxy_reader is not None:
            return False  # gone before its PROXY header (a port probe): closed at once
        self._end_reading()
        return True  # half closed: the replies to what was read still go out

    def connection_lost(self, exc: Exception | None) -> None:
        if self._proxy_reader is not None:
            log.debug("closing %s: gone before its PROXY header", self.peer)  # a port probe
            self._stop_waiting_for_header()
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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

    def _arm_timer(self, delay: float) -> None:
        self._timer = self.loop.call_at(self._last_activity + delay, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        if self._closing:
            return
        logged_in = self.connection.logged_in
        silence = allowed_silence(self.limits, self.splitter, logged_in)
        if silence == math.inf:  # looked at again later: a client that speaks may lose that
            self._timer = self.loop.call_later(self.limits.login_timeout_seconds,
                                               self._check_silence)
            return
        now = self.loop.time()
        if self._busy or self._frames or self._slots or not self._reading:
            self._last_activity = now  # a request in progress, or replies piling up
        if now - self._last_activity < silence:
            self._arm_timer(silence)
            return
        what = "idle" if logged_in else "not logged in"
        log.info("closing %s: %s for %.0f s", self.peer, what, silence)
        self.close_reason = f"{what} for {silence:.0f} s"
        self._end_reading()

    # Handling requests: one task per connection, woken when frames arrive.

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
                while True:
                    frames = self._frames
                    if self._suspended is not None:
                        try:
                            await self._suspended
                        finally:
                            self._suspended = None
                            self._busy = False
                    if self._flooding():
                        frames.clear()
                        self._end_reading()
                    while frames and not self._closed:
                        if self._shutting_down:
                            self._refuse_queued()
                            break
                        frame = frames.popleft()
                        if frame is _TOO_LARGE:
                            self._frame_too_large()
                            frames.clear()
                            break
                        assert isinstance(frame, bytes)
                        self._busy = True
                        await self._handle(frame)
                        self._busy = False
                        if self._flooding():
                            frames.clear()
                            self._end_reading()
                    if self._closing or self._closed:
                        break
                    if not self._reading:
                        self._update_reading()
                    self._wakeup = self.loop.create_future()
                    await self._wakeup
                self._busy = False
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
            if self._suspended is not None:  # cancelled before going on with it
                self._suspended.close()
                self._suspended = None
            self._settle_requests()
            if not self.done.done():
                self.done.set_result(None)

    def _settle_requests(self) -> None:
        if not self._requests_done.done():
            self._requests_done.set_result(None)

    def _refuse_queued(self) -> None:
        """Server shutdown: requests read but not started are answered errno 11."""
        for frame in self._frames:
            if isinstance(frame, bytes):
                self._refuse_stopping(frame)
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

    def _frame_too_large(self) -> None:
        log.info("closing %s: frame over %d bytes", self.peer, self.limits.frame_bytes)
        self.close_reason = "frame too large"
        reply = encode_frame_too_large(self.dialect)
        if reply is not None:
            self._reply_behind(reply)

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


class ProtocolServer:
    """TcpServer on asyncio Protocols: the same constructor, serve() and shutdown()."""

    def __init__(
        self,
        node: Node,
        host: str,
        port: int,
        limits: TransportLimits,
        *,
        tls: ssl.SSLContext | None = None,
        metrics: PrometheusMetrics | None = None,
        per_address: ConnectionsPerAddress | None = None,
    ) -> None:
        self.node = node
        self.tls = tls
        self.metrics = metrics
        self.host = host
        self.port = port
        self.limits = limits
        self.clients: set[ProtocolClient] = set()
        # Shared with the node's other listeners, when given: the limit is per client.
        self.per_address = per_address or ConnectionsPerAddress(
            limits.connections_per_address
        )
        self.shutting_down = False
        self.trusted = TrustedProxies(limits.trusted_proxies)
        self.receive_buffer = memoryview(bytearray(limits.read_chunk))
        # Clients with output queued, written by one callback at the end of the loop iteration.
        self._unflushed: list[ProtocolClient] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()  # run_batch's
        self._flush_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._open: set[ProtocolClient] = set()
        # Accepted, not yet clients: in their TLS handshake, or waiting for a PROXY header.
        self._pending: set[ProtocolClient] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown() has ended every connection."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await self._loop.create_server(
            self._new_client, self.host, self.port, reuse_address=True, start_serving=True
        )
        try:
            port = server.sockets[0].getsockname()[1]
            task_status.started(port)
            await self._stopping.wait()
            server.close()
            while self._open:
                await asyncio.wait([client.done for client in list(self._open)])
        finally:
            server.close()
            for client in list(self._open):
                if client.transport is not None:
                    client.transport.abort()

    async def shutdown(self) -> None:
        """Stop accepting, log every session out (friends are told), let output drain."""
        self.shutting_down = True
        if self._stopping is not None:
            self._stopping.set()
        for client in list(self._open - self.clients):  # still in their TLS handshake
            if client.transport is not None:
                client.transport.abort()
        await log_out_everyone(self.clients, self.limits.request_grace_seconds)

    def run_batch(self, leading: Coroutine[Any, Any, None]) -> None:
        """Run an inbox batch's leader in a task of its own, which no connection's end
        cancels (the batch holds other connections' chats); kept until it is done."""
        task = self.loop.create_task(leading)
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    def flush_soon(self, client: ProtocolClient) -> None:
        """Have client's output written once this loop iteration's callbacks have run, with
        every other client's: one loop callback for them all."""
        self._unflushed.append(client)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        unflushed, self._unflushed = self._unflushed, []
        for client in unflushed:
            try:
                client.flush()
            except Exception:
                log.exception("writing to %s failed", client.peer)

    def _new_client(self) -> ProtocolClient:
        client = ProtocolClient(self)
        self._open.add(client)
        client.done.add_done_callback(lambda _: self._forget(client))
        return client

    def admit(self, client: ProtocolClient) -> bool:
        """Count the client against its address (unless it was while pending); False if that
        address has too many."""
        self._pending.discard(client)
        if not client.counted:
            if not self.per_address.admit(client.address):
                return False
            client.counted = True
        self.clients.add(client)
        return True

    def admit_pending(self, client: ProtocolClient, *, count_address: bool) -> bool:
        """A connection that is not yet a client (TLS handshake, PROXY header to come): count
        it against the cap on such connections and, unless its address is still to be learnt
        from a proxy, against its address. False if either is full."""
        if len(self._pending) >= self.limits.pending_connections:
            return False
        if count_address:
            if not self.per_address.admit(client.address):
                return False
            client.counted = True
        self._pending.add(client)
        return True

    def _forget(self, client: ProtocolClient) -> None:
        self._open.discard(client)
        self._pending.discard(client)
        self.clients.discard(client)
        if client.counted:
            client.counted = False
            self.per_address.leave(client.address)


def _peer(address: Any) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}", str(address[0])
    if address is None:
        return "?", "?"
    return str(address), str(address)
