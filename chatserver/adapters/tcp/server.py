"""The listener: accepts clients, and on shutdown logs every session out before closing."""

import logging

import anyio
from anyio.abc import SocketStream, TaskStatus

from chatserver.adapters.tcp.connection import TcpClient, TransportLimits
from chatserver.adapters.wire.codec import encode_refusal
from chatserver.application.node import Node

log = logging.getLogger("chatserver.tcp")

TOO_MANY_CONNECTIONS = encode_refusal("too many connections from your address")


class TcpServer:
    def __init__(self, node: Node, host: str, port: int, limits: TransportLimits) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.limits = limits
        self.clients: set[TcpClient] = set()
        self.per_address: dict[str, int] = {}
        self._accepting = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown() has ended every connection."""
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, reuse_port=False
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as clients:
            with self._accepting:
                task_status.started(port)
                # Handlers run in our task group, so cancelling this stops accepting only.
                await listener.serve(self._serve_client, task_group=clients)
            await listener.aclose()

    async def shutdown(self) -> None:
        """Stop accepting, log every session out (friends are told), let output drain."""
        self._accepting.cancel()
        clients = list(self.clients)
        for client in clients:
            client.stop_reading()
        for client in clients:
            try:
                await client.connection.disconnect()
            except Exception:
                log.exception("logging out %s failed", client.peer)
        for client in clients:
            client.release()

    async def _serve_client(self, stream: SocketStream) -> None:
        client = TcpClient(stream, self.node, self.limits)
        address = client.address
        limit = self.limits.connections_per_address
        if limit and self.per_address.get(address, 0) >= limit:
            log.warning("refusing %s: already %d connections from there", client.peer, limit)
            with anyio.move_on_after(1):
                await stream.send(TOO_MANY_CONNECTIONS)
            await stream.aclose()
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.clients.add(client)
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            self.per_address[address] -= 1
            if not self.per_address[address]:
                del self.per_address[address]
