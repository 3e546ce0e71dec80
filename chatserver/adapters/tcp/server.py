"""The listener: accepts clients, and on shutdown logs every session out before closing."""

import logging
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream, Listener, TaskStatus
from anyio.streams.tls import TLSStream

from chatserver.adapters.serving.requests import REFUSAL_LOG, log_out_everyone
from chatserver.adapters.serving.settings import TOO_MANY_CONNECTIONS, ListenerSettings
from chatserver.adapters.tcp.connection import TcpClient

log = logging.getLogger("chatserver.tcp")

TLS_HANDSHAKE_SECONDS = 30.0


class TcpServer(ListenerSettings):
    """The TCP listener on anyio streams: one task per client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clients: set[TcpClient] = set()
        self._handshakes = 0  # connections in their TLS handshake
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
        if self.tls is not None:
            await self._serve_tls_client(stream, self.tls)
            return
        await self._serve_counted(stream)

    async def _serve_tls_client(self, stream: ByteStream, tls: ssl.SSLContext) -> None:
        """Count the connection against its address and the cap on handshakes in progress
        before its TLS handshake: a client cannot hold more descriptors by never finishing
        it."""
        address = _peer(stream)
        if self._handshakes >= self.limits.pending_connections or not self.per_address.admit(
            address
        ):
            if REFUSAL_LOG.allow():
                log.warning("refusing %s: too many connections from there or in a TLS "
                            "handshake%s", address, REFUSAL_LOG.skipped())
            await anyio.aclose_forcefully(stream)
            return
        try:
            self._handshakes += 1
            try:
                with anyio.fail_after(TLS_HANDSHAKE_SECONDS):
                    # No closing handshake: a chat client that vanishes must not hold us up.
                    wrapped = await TLSStream.wrap(stream, server_side=True, ssl_context=tls,
                                                   standard_compatible=False)
            except (TimeoutError, ssl.SSLError, OSError, anyio.BrokenResourceError,
                    anyio.EndOfStream) as error:
                log.info("TLS handshake failed: %s", error or type(error).__name__)
                await anyio.aclose_forcefully(stream)
                return
            finally:
                self._handshakes -= 1
            await self._serve_counted(wrapped, counted=address)
        finally:
            self.per_address.leave(address)

    async def _serve_counted(self, stream: ByteStream, counted: str | None = None) -> None:
        """Serve a client; counted: the address it is already counted under, if it is."""
        client = TcpClient(stream, self.node, self.limits, self.metrics, self.trusted)
        if self.limits.proxy_protocol and (
            not await client.read_proxy_header() or self._stopping
        ):
            await anyio.aclose_forcefully(stream)
            return
        if counted is None and not self.per_address.admit(client.address):
            log.warning("refusing %s: already %d connections from there", client.peer,
                        self.per_address.limit)
            with anyio.move_on_after(1):
                await stream.send(TOO_MANY_CONNECTIONS)
            await stream.aclose()
            return
        client.per_address = self.per_address
        self.clients.add(client)
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            if counted is None:
                self.per_address.leave(client.address)


def _peer(stream: ByteStream) -> str:
    try:
        return str(stream.extra(anyio.abc.SocketAttribute.remote_address)[0])
    except (anyio.TypedAttributeLookupError, TypeError, IndexError):
        return "?"
