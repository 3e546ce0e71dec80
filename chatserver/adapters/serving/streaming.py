"""Serving one connection on anyio around a ConnectionCore, for the anyio TCP client and the
WebSocket client: ServedConnection (the core, the frame queue, the lifecycle) read by one loop,
its OutputQueue drained by one writer task. Each transport reads (_read), feeds the core
(_feed), writes (_send) and closes (_close_transport) in its own way."""

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from chatserver.adapters.connection_core import Refused, TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.connection import ServedConnection
from chatserver.adapters.serving.outbox import run_callbacks
from chatserver.adapters.serving.settings import ConnectionsPerAddress
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")


class StreamingClient(ServedConnection):
    """One client connection on anyio: a read loop and a writer task. messages: frames come
    whole, one per message (WebSocket), not cut from a byte stream."""

    def __init__(self, node: Node, limits: TransportLimits, metrics: PrometheusMetrics | None,
                 peer: str, address: str, trusted: TrustedProxies | None = None, *,
                 messages: bool = False) -> None:
        super().__init__(node, limits, metrics, peer, address, anyio.current_time(), trusted,
                         messages=messages)
        self._wake = anyio.Event()
        self._read_scope = anyio.CancelScope()
        self._task_group: TaskGroup | None = None

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(function, *args)

    def _now(self) -> float:
        return anyio.current_time()

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

    def _flush_soon(self) -> None:
        self._wake.set()

    def _closed_now(self) -> None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _end_reading(self) -> None:
        self._closing = True
        if not self._busy:
            self._read_scope.cancel()

    # The loops.

    async def serve_among(self, clients: "set[Any]", per_address: ConnectionsPerAddress) -> None:
        """Serve this client, counted by its listener's address count, in clients meanwhile."""
        self.per_address = per_address
        clients.add(self)
        try:
            await self.run()
        finally:
            clients.discard(self)

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._write_loop)
                await self._lifecycle()
                tg.cancel_scope.cancel()
        except Exception:
            log.exception("connection %s failed", self.peer)

    async def _serve_reads(self) -> None:
        with self._read_scope:
            await self._read_loop()

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
                if self._silent():
                    return None
                continue
            if data is None:
                core.receive_eof()
            return data

    async def _take(self, items: list[bytes | Refused]) -> bool:
        """Serve every frame the core handed out; False when the connection is to stop
        reading."""
        if self._take_frames(items):
            await self._serve_queued()
        if self._shutting_down:
            return False
        if self.core.closing is not None:
            self._verdict()
            return False
        while self.out.queued > self.limits.reply_backlog_bytes and not self._closed:
            await self._output_moving()
        return True

    def _queue(self, frame: bytes) -> None:
        self.out.add(frame)
        self._wake.set()

    async def _write_loop(self) -> None:
        out = self.out
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if not out.frames and not out.callbacks:
                continue
            frames, callbacks = out.take()
            if frames and not await self._send(frames):
                self.core.receive_eof()  # the peer is gone: its end, not the server's
                self.close()
                return
            self._output_moved()
            await run_callbacks(callbacks, self.peer)

    def _finished(self) -> None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()  # the writer: what comes now is not sent
