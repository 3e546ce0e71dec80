"""One client connection: a reader that handles every frame a read yields, and an outbound
buffer drained by a single writer, bounded so a client that stops reading cannot grow memory."""

import logging
import ssl
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ByteStream, TaskGroup
from attrs import define

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.budget import RequestBudget
from chatserver.adapters.tcp.proxy_header import ProxyHeaderError, ProxyHeaderReader
from chatserver.adapters.tcp.requests import RequestServing
from chatserver.adapters.wire.codec import (
    Dialect,
    encode_event,
    encode_frame_too_large,
)
from chatserver.adapters.wire.framing import FrameSplitter
from chatserver.application.connection import Connection
from chatserver.application.node import Node
from chatserver.domain.messages import Event

log = logging.getLogger("chatserver.tcp")

Callback = Callable[[], Awaitable[None]]


@define
class TransportLimits:
    frame_bytes: int = 65536
    # Past this much unsent output the client is too far behind: the connection ends.
    outbound_bytes: int = 4 * 1024 * 1024
    # A client whose replies pile up past this is not read from until they drain.
    reply_backlog_bytes: int = 256 * 1024
    read_chunk: int = 65536
    close_grace_seconds: float = 5.0
    # Requests per connection: a burst, then a rate (PROTOCOL.md's floor is 100 and 50/s).
    request_burst: int = 200
    requests_per_second: float = 100.0
    # A client refused this many requests without slowing down enough for its budget to
    # refill is flooding: it is disconnected.
    refused_before_disconnect: int = 200
    # Silence allowed before login, and after (clients PING every 20 s or so).
    login_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 300.0
    # Open connections from one address (0: no limit, e.g. behind nginx, where all share one).
    connections_per_address: int = 512
    # Every connection starts with a PROXY protocol header (nginx `proxy_protocol on;`) naming
    # the real client, which must arrive within this time.
    proxy_protocol: bool = False
    proxy_header_seconds: float = 5.0
    # At shutdown, requests already being handled get this long to finish and be answered
    # before sessions are logged out (half of serve's grace; the rest is for logging out).
    request_grace_seconds: float = 5.0


class TcpClient(RequestServing):
    """Outbox of one TCP client, and the loops that move its bytes."""

    def __init__(
        self,
        stream: ByteStream,
        node: Node,
        limits: TransportLimits,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.stream = stream
        self.metrics = metrics
        self.limits = limits
        self.peer, self.address = _peer(stream)
        self.connection = Connection(node, self, self.address)
        self.budget = RequestBudget(limits.requests_per_second, limits.request_burst)
        self._refused = 0
        self.close_reason = "connection closed by the client"
        self.splitter = FrameSplitter(limits.frame_bytes)
        self.dialect = Dialect.MODERN
        self._early = b""  # what came right after the PROXY header: the first request bytes
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

    # The loops.

    def stop_reading(self) -> None:
        """Server shutdown: take no more requests (one being served goes on), stay open until
        release() to hear the rest."""
        self._closing = self._shutting_down = True
        if not self._handling:
            self._read_scope.cancel()

    async def requests_done(self) -> None:
        """Wait until the request being served when stop_reading() came is answered."""
        await self._reading_done.wait()

    def release(self) -> None:
        """Server shutdown: everyone is logged out, send what is queued and close."""
        self._released.set()

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
            log.exception("connection %s failed", self.peer)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.connection.disconnect(self.close_reason)
                except Exception:
                    log.exception("ending the session of %s failed", self.peer)
                try:
                    await self.stream.aclose()
                except (OSError, ssl.SSLError, anyio.BrokenResourceError) as error:
                    log.debug("closing %s: %s", self.peer, error)

    async def read_proxy_header(self) -> bool:
        """--proxy-protocol: take the client's real address from the header the proxy sends
        first. False (and logged) if no valid header came within the limits."""
        reader = ProxyHeaderReader()
        try:
            with anyio.fail_after(self.limits.proxy_header_seconds):
                parsed = None
                while parsed is None:
                    parsed = reader.feed(await self.stream.receive(self.limits.read_chunk))
        except ProxyHeaderError as error:
            log.info("closing %s: %s", self.peer, error)
            return False
        except TimeoutError:
            log.info("closing %s: no PROXY header within %.0f s", self.peer,
                     self.limits.proxy_header_seconds)
            return False
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            # A port probe (a health check, a load balancer's) looks just like this.
            log.debug("closing %s: gone before its PROXY header", self.peer)
            return False
        header, self._early = parsed
        if header.source is not None:
            proxy = self.peer
            host, port = header.source
            self.peer, self.address = f"{host}:{port}", host
            self.connection.address = host
            log.debug("connection from %s through %s", self.peer, proxy)
        return True

    async def _read_loop(self) -> None:
        if self._early and not await self._take(self._early):
            return
        self._early = b""
        while not self._closing:
            data = await self._receive()
            if data is None or not await self._take(data):
                return

    async def _receive(self) -> bytes | None:
        """The next bytes from the client; None when it is gone or has been silent too long."""
        silence = (
            self.limits.idle_timeout_seconds
            if self.connection.logged_in
            else self.limits.login_timeout_seconds
        )
        try:
            with anyio.fail_after(silence):
                return await self.stream.receive(self.limits.read_chunk)
        except TimeoutError:
            what = "idle" if self.connection.logged_in else "not logged in"
            log.info("closing %s: %s for %.0f s", self.peer, what, silence)
            self.close_reason = f"{what} for {silence:.0f} s"
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            pass
        return None

    async def _take(self, data: bytes) -> bool:
        """Serve every frame in data; False when the connection is to stop reading."""
        frames = self.splitter.feed(data)
        if frames and self.splitter.legacy:
            self.dialect = Dialect.LEGACY
        for frame in frames:
            if self._shutting_down:
                self._refuse_stopping(frame)
                continue
            self._handling = True
            try:
                await self._handle(frame)
            finally:
                self._handling = False
        if self._shutting_down:
            return False
        if self._flooding():
            return False
        if self.splitter.too_large:
            log.info("closing %s: frame over %d bytes", self.peer, self.limits.frame_bytes)
            self.close_reason = "frame too large"
            reply = encode_frame_too_large(self.dialect)
            if reply is not None:
                self._queue(reply)
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
            data = b"".join(self._pending)
            callbacks = self._callbacks
            self._pending, self._pending_bytes, self._callbacks = [], 0, []
            if data:
                try:
                    await self.stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
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


def _peer(stream: ByteStream) -> tuple[str, str]:
    """The client's host:port for logs, and its host for limits per address."""
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?", "?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}", str(address[0])
    return str(address), str(address)
