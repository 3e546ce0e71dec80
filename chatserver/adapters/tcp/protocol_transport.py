"""The TCP transport on asyncio Protocols: one connection, a ServedConnection fed by the event
loop's callbacks (the listener is protocol_server.py). Bytes arrive in buffer_updated (into
the server's one receive buffer) and go to the ConnectionCore; the frames it hands out are
served right there until one must wait (most chats join the inbox batch being gathered), the
rest by the connection's task, started when first needed. Output waits in the OutputQueue for
one transport.write per connection per loop iteration; silence is watched by one call_at timer,
re-armed only when it fires. Public asyncio API only; runs inside anyio.run on asyncio."""

import asyncio
import math
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

from chatserver.adapters.connection_core import Refused
from chatserver.adapters.serving.admission import Ticket
from chatserver.adapters.serving.connection import ServedConnection, log
from chatserver.adapters.serving.settings import TOO_MANY_CONNECTIONS, peer_and_host
from chatserver.adapters.tcp.connection import set_keepalive
from chatserver.adapters.tcp.listener import Listener

# Frames read but not yet handled past which the client is not read from (a slow request).
_QUEUE_LIMIT = 256


def _settle(future: "asyncio.Future[None] | None") -> None:
    if future is not None and not future.done():
        future.set_result(None)


class ProtocolClient(ServedConnection, asyncio.BufferedProtocol):
    """One TCP client, driven by the event loop's callbacks."""

    def __init__(self, server: Listener) -> None:
        """Made before its transport is: the rest is set up by connection_made."""
        self.server, self.loop = server, server.loop
        self.transport: asyncio.Transport | None = None
        self.done = server.loop.create_future()

    def _set_up(self, peer: str, address: str) -> None:
        server = self.server
        super().__init__(server.node, server.limits, server.metrics, peer, address,
                         self.loop.time(), server.trusted)
        self.per_address, self.ticket = server.per_address, Ticket(peer, address)
        self._flush_wanted = False  # the server will write this connection's output
        self._callback_task: asyncio.Task[None] | None = None  # runs out.ready
        self._worker: asyncio.Task[None] | None = None  # the connection's task
        self._wakeup: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # pipelined requests' (RequestServing)
        self._lost = False  # the socket is gone
        self._reading = True
        self._registered = False
        self._timer: asyncio.TimerHandle | None = None
        self._lead = server.run_batch

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]],
               *args: Any) -> "asyncio.Task[None]":
        task = self.loop.create_task(function(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _now(self) -> float:
        return self.loop.time()

    def _closed_now(self) -> None:
        self.out.drop()
        self._stop_timer()
        self._update_reading()
        self._wake()

    # asyncio.BufferedProtocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        self._set_up(*peer_and_host(transport.get_extra_info("peername")))
        server, core = self.server, self.core
        set_keepalive(transport.get_extra_info("socket"))
        if server.tls is not None:
            if self._admit_pending("TLS handshake", count_address=True):
                transport.pause_reading()
                self._spawn(self._start_tls, transport, server.tls)
        elif core.closing is not None:  # --proxy-protocol, and not from a trusted proxy
            self._abort_unopened()
        elif core.awaiting_proxy_header:
            if self._admit_pending("PROXY header", count_address=False):
                self._arm_timer()
        else:
            self._open()

    def _admit_pending(self, waiting_for: str, *, count_address: bool) -> bool:
        if self.server.admission.admit_pending(self.ticket, waiting_for,
                                               count_address=count_address):
            return True
        self.core.close(f"too many connections waiting for a {waiting_for}", abort=True)
        self._abort_unopened(logged=True)
        return False

    def _abort_unopened(self, logged: bool = False) -> None:
        """Never a client (not a trusted proxy, no valid PROXY header, too many): drop it."""
        if not logged:
            self._verdict()
        self._stop_timer()
        self._lost = self._closed = self._closing = True
        if self.transport is not None:
            self.transport.abort()
        _settle(self.done)

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            tls = await self.loop.start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=30.0
            )
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as error:
            log.info("TLS handshake failed: %s", error or type(error).__name__)
            tls = None
        except asyncio.CancelledError:
            transport.abort()
            raise
        if tls is None:  # failed, or the client went away during the handshake
            self._abort_unopened(logged=True)
        else:
            self.transport = tls
            self._open()

    def _open(self) -> None:
        transport = self.transport
        assert transport is not None
        if not self.server.admit(self):
            self._lost = self._closed = self._closing = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            _settle(self.done)
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
                self._proxied()
                self._open()
                if self._registered and not self._closing:
                    self._take(items)
            return
        if not self._closing:
            self._take(core.receive(data, self.loop.time()))

    def _take(self, items: "list[bytes | Refused]") -> None:
        """Serve what the core handed out: now, as far as nothing has to wait, the rest by
        the connection's task, in order."""
        if self._take_frames(items):
            if len(self._frames) > _QUEUE_LIMIT:
                self._update_reading()
            self._wake()
        if self.core.closing is not None:
            self._verdict()
            self._end_reading()

    def _cut(self) -> None:
        self._take([])  # logged, and no more is read

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
        self._flush_wanted = False
        self._end_reading()
        self._drained()
        if not self._registered:
            _settle(self.done)

    def resume_writing(self) -> None:
        self._drained()

    # Reading.

    def _end_reading(self) -> None:
        if not self._closing:
            self._closing = True
            self._stop_timer()
            self._update_reading()
            self._wake()

    def _update_reading(self) -> None:
        """Read until reading ends, while the client's replies and requests do not pile up."""
        transport = self.transport
        if self._lost or transport is None:
            return
        want = not (self._closing or self.out.backlogged) and len(self._frames) <= _QUEUE_LIMIT
        if want != self._reading:
            self._reading = want
            transport.resume_reading() if want else transport.pause_reading()

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
        unopened = self.core.awaiting_proxy_header
        if self._closing and not unopened:
            return
        if not self._silent(self._busy or bool(self._frames or self._slots) or not self._reading):
            self._arm_timer()
        elif unopened:
            self._abort_unopened(logged=True)
        else:
            self._end_reading()

    # The connection's task: the frames that have to wait, then the end (ServedConnection).

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            _settle(wakeup)
        elif self._worker is None and self._registered:
            self._worker = self.loop.create_task(self._work())

    async def _work(self) -> None:
        try:
            await self._lifecycle()
        finally:
            _settle(self.done)

    async def _serve_reads(self) -> None:
        while True:
            await self._serve_queued()
            if self._closing or self._closed:
                return
            if not self._reading:
                self._update_reading()
            self._wakeup = self.loop.create_future()
            await self._wakeup

    def _flushed(self) -> bool:
        return (self._lost or self.out.idle) and self._callback_task is None

    async def _close_transport(self) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._closed:
            transport.abort()
        else:
            if self.out.frames:
                self._flush_now()
            transport.close()

    # Writing: one transport.write per connection per loop iteration (the server's flush).

    def _queue(self, frame: bytes) -> None:
        if self._closed:
            return
        out = self.out
        out.frames.append(frame)
        out.queued += len(frame)
        if not self._flush_wanted:  # _flush_soon(), inline: once per reply
            self._flush_wanted = True
            self.server.flush_soon(self)

    def _flush_soon(self) -> None:
        if not self._flush_wanted:
            self._flush_wanted = True
            self.server.flush_soon(self)

    def flush(self) -> None:
        """The server's flush of this loop iteration (unless the connection was lost)."""
        if self._flush_wanted:
            self._flush_wanted = False
            self._flush_now()

    def _flush_now(self) -> None:
        out = self.out
        frames, callbacks = out.frames, out.callbacks  # out.take(), inline: once per write
        out.frames, out.queued, out.callbacks = [], 0, []
        transport = self.transport
        if transport is None or self._lost or (frames and self._closed):
            out.written += callbacks
            self._drained()
            return
        if frames:
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if out.wrote(callbacks, transport.get_write_buffer_size()):
            self._update_reading()
        elif not out.held and (out.written or out.backlogged or self._moved is not None):
            self._drained()

    def _drained(self) -> None:
        """The transport holds nothing more: run what waited for it, read again."""
        out = self.out
        if out.drained():
            self._update_reading()
        if out.ready and self._callback_task is None:
            self._callback_task = self.loop.create_task(self._run_callbacks())
        if self._moved is not None:  # _output_moved(), without the call on the hot path
            self._output_moved()

    async def _run_callbacks(self) -> None:
        try:
            await self.out.run_ready(self.peer)
        finally:
            self._callback_task = None
            self._output_moved()
