"""The listener: accepts clients, and on shutdown logs every session out before closing."""

import logging
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream, Listener, TaskStatus
from anyio.streams.tls import TLSStream

from chatserver.adapters.serving.admission import Admission, Ticket
from chatserver.adapters.serving.requests import log_out_everyone
from chatserver.adapters.serving.settings import TOO_MANY_CONNECTIONS, ListenerSettings
from chatserver.adapters.tcp.connection import TcpClient, stream_peer

log = logging.getLogger("chatserver.tcp")

TLS_HANDSHAKE_SECONDS = 30.0


class TcpServer(ListenerSettings):
    """The TCP listener on anyio streams: one task per client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clients: set[TcpClient] = set()
        self.admission = Admission(self.per_address, self.limits.pending_connections)
        self._accepting = anyio.CancelScope()
        self._stopping = False

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown() has ended every connection."""
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, reuse_port=False
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        # TLS is set up per connection in _serve_client, once the connection is counted.
        served: Listener[Any] = listener
        try:
            async with anyio.create_task_group() as clients:
                with self._accepting:
                    task_status.started(port)
                    # Handlers run in our task group, so cancelling this stops accepting only.
                    await served.serve(self._serve_client, task_group=clients)
                await served.aclose()
        finally:
            # Cancelled (stop at once): the port is let go all the same.
            await anyio.aclose_forcefully(served)

    async def shutdown(self) -> None:
        """Stop accepting and reading, let requests being served finish and be answered (for
        a bounded time), log every session out (friends are told), let output drain."""
        self._accepting.cancel()
        self._stopping = True
        await log_out_everyone(self.clients, self.limits.request_grace_seconds)

    async def _serve_client(self, stream: ByteStream) -> None:
        ticket = Ticket(*stream_peer(stream))
        try:
            if self.tls is not None:
                # Counted before its TLS handshake: a client cannot hold more descriptors by
                # never finishing it.
                if not self.admission.admit_pending(ticket, "TLS handshake", count_address=True):
                    await anyio.aclose_forcefully(stream)
                    return
                wrapped = await self._handshake(stream, self.tls)
                self.admission.admit(ticket)  # no longer pending (counted already)
                if wrapped is None:
                    return
                stream = wrapped
            await self._serve_counted(stream, ticket)
        finally:
            self.admission.leave(ticket)

    async def _handshake(self, stream: ByteStream, tls: ssl.SSLContext) -> ByteStream | None:
        try:
            with anyio.fail_after(TLS_HANDSHAKE_SECONDS):
                # No closing handshake: a chat client that vanishes must not hold us up.
                return await TLSStream.wrap(stream, server_side=True, ssl_context=tls,
                                            standard_compatible=False)
        except (TimeoutError, ssl.SSLError, OSError, anyio.BrokenResourceError,
                anyio.EndOfStream) as error:
            log.info("TLS handshake failed: %s", error or type(error).__name__)
            await anyio.aclose_forcefully(stream)
            return None

    async def _serve_counted(self, stream: ByteStream, ticket: Ticket) -> None:
        """Serve a client, once it is counted against its address (if it is not yet)."""
        client = TcpClient(stream, self.node, self.limits, self.metrics, self.trusted)
        if self.limits.proxy_protocol and (
            not await client.read_proxy_header() or self._stopping
        ):
            await anyio.aclose_forcefully(stream)
            return
        if not self.admission.admit(ticket, client.peer, client.address):
            with anyio.move_on_after(1):
                await stream.send(TOO_MANY_CONNECTIONS)
            await stream.aclose()
            return
        await client.serve_among(self.clients, self.per_address)
