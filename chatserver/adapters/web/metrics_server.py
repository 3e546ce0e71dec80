"""The Prometheus endpoint, served by the event loop: no thread per connection (prometheus_client's
own server has one each, without a timeout or a cap: 3,000 idle connections made 2,994 threads
and slowed the chat to seconds), a cap on open connections, and a deadline per request."""

import logging

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("chatserver.metrics")

MAX_CONNECTIONS = 16  # scrapers at once; more are closed at once
REQUEST_SECONDS = 5.0  # to send the request head and read the reply
MAX_HEAD_BYTES = 8192


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int, *,
                 max_connections: int = MAX_CONNECTIONS,
                 request_seconds: float = REQUEST_SECONDS) -> None:
        self.registry = registry
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.request_seconds = request_seconds
        self.open = 0
        self.refused = 0
        self._scope = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or shut down."""
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            with self._scope:
                await listener.serve(self._serve_one)

    async def shutdown(self) -> None:
        """Stop serving: a scrape has nothing to finish that is worth waiting for."""
        self._scope.cancel()

    async def _serve_one(self, stream: SocketStream) -> None:
        if self.open >= self.max_connections:
            self.refused += 1
            if self.refused in (1, 10, 100, 1000) or self.refused % 10_000 == 0:
                log.warning("metrics: %d connections refused (over %d at once)", self.refused,
                            self.max_connections)
            await anyio.aclose_forcefully(stream)
            return
        self.open += 1
        try:
            with anyio.move_on_after(self.request_seconds):
                await self._answer(stream)
        except (anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            pass
        finally:
            self.open -= 1
            await anyio.aclose_forcefully(stream)

    async def _answer(self, stream: SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_HEAD_BYTES:
                await stream.send(_response(431, "Request Header Fields Too Large", b""))
                return
            head += await stream.receive(4096)
        request_line = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(request_line) < 2 or request_line[0] not in ("GET", "HEAD"):
            await stream.send(_response(405, "Method Not Allowed", b""))
            return
        path = request_line[1].split("?", 1)[0]
        if path not in ("/metrics", "/"):
            await stream.send(_response(404, "Not Found", b"not found\n"))
            return
        body: bytes = generate_latest(self.registry)
        reply = _response(200, "OK", body, CONTENT_TYPE_LATEST)
        await stream.send(reply[: len(reply) - len(body)] if request_line[0] == "HEAD" else reply)


def _response(status: int, reason: str, body: bytes,
              content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body
