"""The web listener: the chat page over HTTP at `/`, and the protocol over WebSocket at `/ws`.

HTTP and WebSocket are aiohttp's (its low-level server: no hand-written parsing); what is ours
is the routing, the same request serving, limits and shutdown as the TCP listener, and the
counting of connections from the moment they are accepted.
"""

import asyncio
import logging
import mimetypes
from http import HTTPStatus
from importlib import resources
from typing import Any

import anyio
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from anyio.abc import TaskStatus

from chatserver.adapters.serving.requests import REFUSAL_LOG, log_out_everyone
from chatserver.adapters.serving.settings import TOO_MANY_CONNECTIONS, ListenerSettings
from chatserver.adapters.web.client import WebSocketClient, peer_address
from chatserver.adapters.web.files import FileTransfers
from chatserver.application.throttle import address_key

log = logging.getLogger("chatserver.web")

WEBSOCKET_PATH = "/ws"

# The library logs every connection and HTTP response at INFO: ours are the lines that count.
_library_log = logging.getLogger("chatserver.web.aiohttp")
if _library_log.level == logging.NOTSET:
    _library_log.setLevel(logging.WARNING)


class _ClientMistakes(logging.Filter):
    """aiohttp logs a request it cannot parse (bad chunked encoding, a header line too long)
    at ERROR with a traceback: any client could fill the log, 15 lines a request. Such a
    request is the client's mistake, answered 400 by aiohttp: it becomes one line, within the
    budget of refusals."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        if REFUSAL_LOG.allow():
            # aiohttp's line is "Error handling request from %s", the peer's address.
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            log.warning("refusing %s: a malformed HTTP request: %s%s", peer,
                        " ".join(str(error.message).split()), REFUSAL_LOG.skipped())
        return False


_library_log.addFilter(_ClientMistakes())

# The page fetches nothing from elsewhere and runs no inline script.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

# aiohttp names itself and its version in a Server header unless one is set.
SERVER_HEADER = "chatserver"

# A connection must send a complete request within this time (and a WebSocket handshake
# finish within it), or it is closed.
OPEN_TIMEOUT_SECONDS = 10.0
READ_BUFFER = 512 * 1024


class StaticFiles:
    """The files of the page, read once from the package: GET `/` is index.html."""

    def __init__(self, package: str = "chatserver.adapters.web", folder: str = "static") -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        root = resources.files(package).joinpath(folder)
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_file() and not entry.name.startswith("."):
                    kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
                    if kind.startswith("text/") or kind in ("application/javascript",):
                        kind += "; charset=utf-8"
                    self.files["/" + entry.name] = (entry.read_bytes(), kind)
        if "/index.html" in self.files:
            self.files["/"] = self.files["/index.html"]

    def response(self, path: str) -> web.Response:
        found = self.files.get(path)
        if found is None:
            return plain(HTTPStatus.NOT_FOUND, "not found\n")
        body, kind = found
        response = web.Response(body=body, headers=_PAGE_HEADERS)
        response.headers["Content-Type"] = kind
        response.headers["Server"] = SERVER_HEADER
        response.force_close()
        return response


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether Origin (scheme://host[:port]) names the host (and port) the request was sent to.
    The scheme is not compared: behind a proxy that terminates TLS the page is https while
    this server speaks http. A Host without a port (nginx's $host) matches any port."""
    if host is None or "://" not in origin:
        return False
    scheme, _, origin_host = origin.partition("://")
    default = "443" if scheme in ("https", "wss") else "80"
    origin_name, origin_port = _split_host(origin_host, default)
    host_name, host_port = _split_host(host.strip().lower(), None)
    return origin_name == host_name and (host_port is None or origin_port == host_port)


def _split_host(host: str, default_port: str | None) -> tuple[str, str | None]:
    if host.startswith("["):  # [IPv6]:port
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else default_port
    name, colon, port = host.rpartition(":")
    return (name, port) if colon and port.isdigit() else (host, default_port)


def plain(status: HTTPStatus, text: str) -> web.Response:
    """A short text answer; the connection closes after it (one request per connection)."""
    response = web.Response(status=status.value, text=text, content_type="text/plain",
                            headers={"Server": SERVER_HEADER,
                                     "X-Content-Type-Options": "nosniff"})
    response.force_close()
    return response


# Connections over their address's limit let through the handshake at once, per address, to
# be told errno 9; more are closed as soon as they are accepted.
OVER_LIMIT_TOLD = 8


class _CountingServer(web.Server):
    """aiohttp's low-level server, telling its owner of every connection accepted and lost."""

    def __init__(self, owner: "WebSocketServer", **kwargs: Any) -> None:
        super().__init__(owner._handle, **kwargs)
        self.owner = owner

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.owner._accepted(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.owner._release(handler)
        super().connection_lost(handler, exc)


class WebSocketServer(ListenerSettings):
    """Serves the page and WebSocket clients; built and stopped as the TCP listeners are (the
    same ListenerSettings), with what only the web port has as keywords."""

    def __init__(
        self,
        *args: Any,
        page: StaticFiles | None = None,
        forwarded_for: bool = False,
        allowed_origins: tuple[str, ...] = (),
        files: FileTransfers | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(*args, **settings)
        self.page = page if page is not None else StaticFiles()
        self.files = files
        # Behind a reverse proxy (nginx) that sets X-Forwarded-For: the client's address is
        # the last one in it (the one the proxy saw), not the proxy's.
        self.forwarded_for = forwarded_for
        # Origins (scheme://host[:port]) whose pages may open /ws; empty: this page's own.
        self.allowed_origins = tuple(o.strip().lower().rstrip("/") for o in allowed_origins)
        self.clients: set[WebSocketClient] = set()
        # Accepted connections that are not (yet) WebSocket clients: plain HTTP requests and
        # handshakes in progress.
        self._pending: set[RequestHandler] = set()
        self._counted: dict[RequestHandler, str] = {}  # the address each is counted under
        # Over their address's limit when accepted, let through to be told errno 9.
        self._over: dict[RequestHandler, str] = {}
        self._over_by_address: dict[str, int] = {}
        self._stop = anyio.Event()
        self._all_gone = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown() has ended every connection."""
        loop = asyncio.get_running_loop()
        http = _CountingServer(
            self,
            loop=loop,
            # Also the time a connection has to send its first request: no slow headers.
            keepalive_timeout=OPEN_TIMEOUT_SECONDS,
            # What a connection's body may hold unread before reading pauses: big enough that
            # an upload streams without a pause per few packets.
            read_bufsize=READ_BUFFER,
            access_log=None,
            logger=_library_log,
        )
        server = await loop.create_server(
            http, self.host, self.port, ssl=self.tls, reuse_address=True,
            # The TLS handshake happens before a connection is counted: keep it short.
            ssl_handshake_timeout=OPEN_TIMEOUT_SECONDS if self.tls is not None else None,
        )
        try:
            sockets = server.sockets
            port = sockets[0].getsockname()[1] if sockets else self.port
            task_status.started(port)
            await self._stop.wait()
            # Stop accepting; the connections end through their own shutdown path.
            server.close()
            if self.clients:
                with anyio.move_on_after(self.limits.close_grace_seconds + 1):
                    await self._all_gone.wait()
        finally:
            server.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await http.shutdown(timeout=0.5)

    async def shutdown(self) -> None:
        """Stop accepting and reading, let requests being served finish and be answered (for
        a bounded time), log every session out (friends are told), let output drain."""
        self._stop.set()
        await log_out_everyone(self.clients, self.limits.request_grace_seconds)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Plain HTTP for the page; the WebSocket handshake on /ws only."""
        path = request.raw_path.split("?", 1)[0]
        if path == WEBSOCKET_PATH:
            return await self._websocket(request)
        if self.files is not None and self.files.handles(path):
            return await self.files.handle(request, path)
        if request.method not in ("GET", "HEAD"):
            return plain(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
        response = self.page.response(path)
        if self.tls is not None:
            # Served over TLS: browsers are to come back over TLS only, for a year.
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._stop.is_set():
            return plain(HTTPStatus.SERVICE_UNAVAILABLE, "server stopping\n")
        if self._spoofed(request):
            return plain(HTTPStatus.FORBIDDEN, "X-Forwarded-For from an untrusted peer\n")
        if not self._origin_allowed(request):
            if REFUSAL_LOG.allow():
                log.warning("refusing %s: WebSocket from origin %r (--allowed-origin)%s",
                            _peer(request)[0], request.headers.get("Origin"),
                            REFUSAL_LOG.skipped())
            return plain(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        websocket = web.WebSocketResponse(
            # Frames a little over the limit are read so that they get errno 8 as on TCP;
            # bigger ones are refused by the library (close code 1009) before we see them.
            max_msg_size=2 * self.limits.frame_bytes + 1024,
            # The protocol has its own heartbeat (PING_MSG); this one finds dead peers.
            heartbeat=20,
            compress=False,
            timeout=self.limits.close_grace_seconds,
            decode_text=False,
        )
        if not websocket.can_prepare(request).ok:
            return plain(HTTPStatus.UPGRADE_REQUIRED, "WebSocket only\n")
        websocket.headers["Server"] = SERVER_HEADER
        await websocket.prepare(request)
        handler, transport = request.protocol, request.transport
        assert transport is not None
        self._pending.discard(handler)
        await self._serve_client(handler, transport, websocket, self._forwarded(request))
        return websocket

    def _origin_allowed(self, request: web.BaseRequest) -> bool:
        """A browser names the page that opens /ws in Origin: by default only this server's own
        page may (another site's page cannot use its visitors' network position to reach this
        server); --allowed-origin lists others ("*": any). Clients that are not browsers send
        no Origin and are let in."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        if self.allowed_origins:
            return "*" in self.allowed_origins or origin in self.allowed_origins
        return _same_origin(origin, request.headers.get("Host"))

    def _spoofed(self, request: web.BaseRequest) -> bool:
        """X-Forwarded-For from a peer that is not a trusted proxy: refused, and logged."""
        if not self.forwarded_for or "X-Forwarded-For" not in request.headers:
            return False
        peer, address = _peer(request)
        if address in self.trusted:
            return False
        if REFUSAL_LOG.allow():
            log.warning("refusing %s: X-Forwarded-For from a peer that is not a trusted proxy "
                        "(--trusted-proxy %s)%s", peer, self.trusted, REFUSAL_LOG.skipped())
        return True

    def _forwarded(self, request: web.BaseRequest) -> str | None:
        """The client's address as the trusted proxy in front says (the last hop, which that
        proxy added); None when there is no proxy in front."""
        if not self.forwarded_for:
            return None
        if _peer(request)[1] not in self.trusted:
            return None  # no X-Forwarded-For (_spoofed refused any): a client of its own
        hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        last = hops[-1].strip()
        return last or None

    async def _serve_client(
        self,
        handler: RequestHandler,
        transport: asyncio.Transport,
        websocket: web.WebSocketResponse,
        forwarded: str | None,
    ) -> None:
        client = WebSocketClient(
            websocket, transport, self.node, self.limits, self.metrics, address=forwarded
        )
        counted = self._counted.get(handler)
        # Not counted at accept: from a trusted proxy, the client's address was learnt from
        # X-Forwarded-For (or the address was over its limit: refused below).
        if (counted is None and not self._forget_over(handler)
                and self.per_address.admit(client.address)):
            self._counted[handler] = counted = client.address
        if counted is None:
            if REFUSAL_LOG.allow():
                log.warning("refusing %s: already %d connections from there%s", client.peer,
                            self.per_address.limit, REFUSAL_LOG.skipped())
            with anyio.move_on_after(1):
                await websocket.send_frame(TOO_MANY_CONNECTIONS[:-1], WSMsgType.TEXT)
                await websocket.close(code=WSCloseCode.TRY_AGAIN_LATER,
                                      message=b"too many connections")
            return
        try:
            await client.serve_among(self.clients, self.per_address)
        finally:
            self._release(handler)
            if self._stop.is_set() and not self.clients:
                self._all_gone.set()

    # Connections are counted from the moment they are accepted, not once their handshake is
    # done: a client cannot hold more descriptors by never finishing its handshake.

    def _accepted(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """A TCP connection was accepted (after TLS, if any): count it against the cap on
        connections not yet clients and against its address, unless it is a trusted proxy
        whose clients are counted by the address it names."""
        peer, host = peer_address(transport)
        if len(self._pending) >= self.limits.pending_connections:
            if REFUSAL_LOG.allow():
                log.warning("refusing %s: %d WebSocket handshakes in progress%s", peer,
                            len(self._pending), REFUSAL_LOG.skipped())
            _abort_soon(transport)
            return
        self._pending.add(handler)
        if self.forwarded_for and host in self.trusted:
            return
        if self.per_address.admit(host):
            self._counted[handler] = host
        elif self._over_by_address.get(host := address_key(host), 0) < OVER_LIMIT_TOLD:
            # Let a few through the handshake to be told errno 9; the rest are cut at once.
            self._over[handler] = host
            self._over_by_address[host] = self._over_by_address.get(host, 0) + 1
        else:
            self._pending.discard(handler)
            _abort_soon(transport)

    def _release(self, handler: RequestHandler) -> None:
        self._pending.discard(handler)
        self._forget_over(handler)
        counted = self._counted.pop(handler, None)
        if counted is not None:
            self.per_address.leave(counted)

    def _forget_over(self, handler: RequestHandler) -> bool:
        host = self._over.pop(handler, None)
        if host is None:
            return False
        left = self._over_by_address[host] - 1
        if left:
            self._over_by_address[host] = left
        else:
            del self._over_by_address[host]
        return True


def _peer(request: web.BaseRequest) -> tuple[str, str]:
    transport = request.transport
    if transport is None:
        return "?", "?"
    return peer_address(transport)


def _abort_soon(transport: asyncio.Transport) -> None:
    """Cut a connection just accepted, once aiohttp has started its handler (cut at once, the
    handler would start on a connection already forgotten)."""
    asyncio.get_running_loop().call_soon(transport.abort)
