"""The TCP listener on asyncio Protocols: accepts connections (a ProtocolClient each), counts
them per address and while they are not yet clients (TLS handshake, PROXY header), writes every
client's output once per loop iteration, and on shutdown logs every session out."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import anyio
from anyio.abc import TaskStatus

from chatserver.adapters.serving.admission import Admission
from chatserver.adapters.serving.requests import log_out_everyone
from chatserver.adapters.serving.settings import ListenerSettings
from chatserver.adapters.tcp.protocol_transport import ProtocolClient

log = logging.getLogger("chatserver.tcp")


class ProtocolServer(ListenerSettings):
    """TcpServer on asyncio Protocols: the same constructor, serve() and shutdown()."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clients: set[ProtocolClient] = set()
        limits = self.limits
        self.shutting_down = False
        self.receive_buffer = memoryview(bytearray(limits.read_chunk))
        # Clients with output queued, written by one callback at the end of the loop iteration.
        self._unflushed: list[ProtocolClient] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()  # run_batch's
        self._flush_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._open: set[ProtocolClient] = set()
        self.admission = Admission(self.per_address, limits.pending_connections)

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
        """Count the client against its address (unless it was while pending); False (and
        logged) if that address has too many."""
        if not self.admission.admit(client.ticket, client.peer, client.address):
            return False
        self.clients.add(client)
        return True

    def _forget(self, client: ProtocolClient) -> None:
        self._open.discard(client)
        self.clients.discard(client)
        self.admission.leave(client.ticket)
