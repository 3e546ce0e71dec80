"""The listener: accepts clients, and on shutdown logs every session out before closing."""

import logging
import ssl
from typing import Any

import anyio
from anyio.abc import ByteStream, Listener, TaskStatus
from anyio.streams.tls import TLSListener

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.budget import ConnectionsPerAddress
from chatserver.adapters.tcp.connection import TcpClient, TransportLimits
from chatserver.adapters.tcp.proxy_header import TrustedProxies
from chatserver.adapters.tcp.requests import log_out_everyone
from chatserver.adapters.wire.codec import encode_refusal
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")

TOO_MANY_CONNECTIONS = encode_refusal("too many connections from your address")


class TcpServer:
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
        self.clients: set[TcpClient] = set()
        # Shared with the node's other listeners, when given: the limit is per client.
        self.per_address = per_address or ConnectionsPerAddress(
            limits.connections_per_address
        )
        self.trusted = TrustedProxies(limits.trusted_proxies)
        self._accepting = anyio.CancelScope()
        self._stopping = False

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown() has ended every connection."""
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, reuse_port=False
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        served: Listener[Any] = listener
        if self.tls is not None:
            # No closing handshake: a chat client that vanishes must not hold up the server.
            served = QuietTLSListener(listener, self.tls, standard_compatible=False)
        async with anyio.create_task_group() as clients:
            with self._accepting:
                task_status.started(port)
                # Handlers run in our task group, so cancelling this stops accepting only.
                await served.serve(self._serve_client, task_group=clients)
            await served.aclose()

    async def shutdown(self) -> None:
        """Stop accepting and reading, let requests being served finish and be answered (for
        a bounded time), log every session out (friends are told), let output drain."""
        self._accepting.cancel()
        self._stopping = True
        await log_out_everyone(self.clients, self.limits.request_grace_seconds)

    async def _serve_client(self, stream: ByteStream) -> None:
        client = TcpClient(stream, self.node, self.limits, self.metrics)
        if self.limits.proxy_protocol and (
            not await client.read_proxy_header(self.trusted) or self._stopping
        ):
            await anyio.aclose_forcefully(stream)
            return
        if not self.per_address.admit(client.address):
            log.warning("refusing %s: already %d connections from there", client.peer,
                        self.per_address.limit)
            with anyio.move_on_after(1):
                await stream.send(TOO_MANY_CONNECTIONS)
            await stream.aclose()
            return
        self.clients.add(client)
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            self.per_address.leave(client.address)


class QuietTLSListener(TLSListener):
    """A failed TLS handshake is the client's problem: one log line, no traceback."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        log.info("TLS handshake failed: %s", exc or type(exc).__name__)
        await anyio.aclose_forcefully(stream)
        if not isinstance(exc, Exception):
            raise exc
