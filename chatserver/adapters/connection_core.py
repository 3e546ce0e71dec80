"""The per-connection protocol as one plain object, in the manner of h11: no socket, no loop,
no clock of its own.

A driver (asyncio Protocol, anyio stream) hands a ``ConnectionCore`` the bytes it reads and
the time (``receive``); the WebSocket endpoint, whose messages are whole frames, hands it each
message (``receive_message``). The driver asks it when to look again
(``deadline``) and whether silence has lasted too long (``check``). Back come the frames to
serve, in order, each either to be served or refused (over the request budget), and once the
connection is to end a ``Close``: its reason (true for the log and the session's end), a last
reply to send behind the others, and whether what is unsent is dropped. Everything here is what
must be the same on every transport: framing (LF / NUL), the PROXY header, the dialect, frames
too long, the request budget, silence, and why a connection ended.
"""

import math

from attrs import define, frozen

from chatserver.adapters.proxy_header import (
    LOOPBACK,
    ProxyHeaderError,
    ProxyHeaderReader,
    TrustedProxies,
)
from chatserver.adapters.wire.codec import Dialect, encode_frame_too_large
from chatserver.adapters.wire.framing import FrameSplitter

CLOSED_BY_CLIENT = "connection closed by the client"
# Requests refused errno 9 by a limit of the server's (registrations per address, failed logins,
# strangers' messages...): past this many, less what refills at the rate below, the client is not
# waiting as told but flooding (a REG of a taken name resent 20,000 times a second over 300
# connections): it is disconnected, as past TransportLimits.refused_before_disconnect.
LIMITED_BEFORE_DISCONNECT = 50
LIMITED_PER_SECOND = 1.0
CLOSED_BY_SERVER = "closed by the server"


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
    # Silence allowed before login, and after (clients PING every 20 s or so); see
    # ConnectionCore.allowed_silence for the clients these do not apply to.
    login_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 300.0
    # Open connections from one address (0: no limit, e.g. behind nginx, where all share one).
    connections_per_address: int = 512
    # Every connection starts with a PROXY protocol header (nginx `proxy_protocol on;`) naming
    # the real client, which must arrive within this time.
    proxy_protocol: bool = False
    proxy_header_seconds: float = 5.0
    # The proxies (CIDR blocks) whose PROXY header, or X-Forwarded-For on the web port, is
    # believed; a connection from elsewhere that sends one is refused (--trusted-proxy).
    trusted_proxies: tuple[str, ...] = LOOPBACK
    # Connections accepted but not yet clients (in the TLS or WebSocket handshake, waiting
    # for a PROXY header), all addresses together; they count against their address too.
    pending_connections: int = 1024
    # At shutdown, requests already being handled get this long to finish and be answered
    # before sessions are logged out (half of serve's grace; the rest is for logging out).
    request_grace_seconds: float = 5.0
    # Chats, receipts and READ are served while those before them on their connection still
    # wait (pipelining); False serves each connection's requests one at a time (comparisons).
    pipeline: bool = True


@frozen
class Close:
    """Why and how a connection ends. reply: bytes to send after every earlier reply (errno 8),
    if any; abort: drop what is unsent (the client is not reading, or is not a client)."""

    reason: str
    reply: bytes | None = None
    abort: bool = False
    # Logged at warning level (an abuse) rather than info.
    warning: bool = False
    # Closed for flooding (what was read and not yet served is dropped).
    flooding: bool = False


@frozen
class Refused:
    """A frame over the request budget: answered errno 9, not served."""

    frame: bytes


class TokenBucket:
    """A burst, then a rate; the time is given, never read."""

    __slots__ = ("burst", "per_second", "tokens", "updated")

    def __init__(self, per_second: float, burst: int, now: float) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def spend(self, now: float) -> bool:
        """Take one token; False if none is left."""
        if self.tokens < 1:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
            self.updated = now
            if self.tokens < 1:
                return False
        self.tokens -= 1
        return True


class ConnectionCore:
    """One connection's protocol state: bytes and time in, frames and verdicts out."""

    def __init__(self, limits: TransportLimits, peer: str, address: str, now: float,
                 trusted: TrustedProxies | None = None, *, messages: bool = False) -> None:
        """messages: the transport brings whole frames, one per message (WebSocket): they are
        given to receive_message, and there is no PROXY header and no legacy dialect."""
        self.limits = limits
        self.messages = messages
        self.peer, self.address = peer, address  # host:port for logs, host for limits
        self.splitter = FrameSplitter(limits.frame_bytes)
        self.dialect = Dialect.MODERN
        self.budget = TokenBucket(limits.requests_per_second, limits.request_burst, now)
        self.refused = 0  # requests refused since the budget last refilled
        # Requests refused by a limit of the server's (limited()), as a bucket that refills.
        self.limits_left = TokenBucket(LIMITED_PER_SECOND, LIMITED_BEFORE_DISCONNECT, now)
        self.closing: Close | None = None
        self.last_heard = now
        self._proxy: ProxyHeaderReader | None = None
        self._header_deadline = math.inf
        if limits.proxy_protocol and not messages:
            if trusted is not None and address not in trusted:
                self.closing = Close(f"not a trusted proxy (--trusted-proxy {trusted})",
                                     abort=True, warning=True)
            else:
                self._proxy = ProxyHeaderReader()
                self._header_deadline = now + limits.proxy_header_seconds

    @property
    def awaiting_proxy_header(self) -> bool:
        return self._proxy is not None

    def receive(self, data: bytes, now: float) -> list[bytes | Refused]:
        """Take what was read: the frames it completes, in order, each to serve (bytes) or to
        refuse (Refused). Once closing is set nothing more is returned."""
        if self.closing is not None:
            return []
        self.last_heard = now
        if self._proxy is not None:
            data = self._read_proxy_header(data)
            if not data:
                return []
        splitter = self.splitter
        frames = splitter.feed(data)
        if frames and splitter.legacy:
            self.dialect = Dialect.LEGACY
        if frames:
            frames = self._charge(frames, now)  # type: ignore[assignment]
        if splitter.too_large and self.closing is None:
            self.closing = Close("frame too large", encode_frame_too_large(self.dialect))
        return frames  # type: ignore[return-value]

    def receive_message(self, frame: bytes, now: float) -> list[bytes | Refused]:
        """Take one whole frame (a WebSocket message): the same budget, frame limit and
        verdicts as receive, without cutting; the frame itself, or refused, or nothing (once
        closing is set)."""
        if self.closing is not None:
            return []
        self.last_heard = now
        if len(frame) > self.limits.frame_bytes:
            self.closing = Close("frame too large", encode_frame_too_large(self.dialect))
            return []
        return self._charge([frame], now)

    def _charge(self, frames: list[bytes], now: float) -> list[bytes | Refused]:
        """Every frame, good or bad, costs one token; past the budget it is refused, and past
        refused_before_disconnect refusals without a pause the client is cut off."""
        budget = self.budget
        out: list[bytes | Refused] | None = None
        for index, frame in enumerate(frames):
            if budget.spend(now):
                if self.refused and budget.tokens >= budget.burst - 1:
                    self.refused = 0  # quiet long enough to refill: forgiven
                if out is not None:
                    out.append(frame)
                continue
            if out is None:
                out = list(frames[:index])
            self.refused += 1
            if self.refused > self.limits.refused_before_disconnect:
                self.closing = Close(f"still flooding after {self.refused} refused requests",
                                     warning=True, flooding=True)
                return out
            out.append(Refused(frame))
        return frames if out is None else out  # type: ignore[return-value]

    def limited(self, now: float, address_flooded: bool = False) -> bool:
        """A request was refused errno 9 by a limit of the server's rather than the budget
        ("too many new accounts from your address: try again later"). True (and closing) when
        the client has had more of those than LIMITED_BEFORE_DISCONNECT, less what refilled
        at LIMITED_PER_SECOND: it does not wait as it is told but floods, and is cut off; at
        once if address_flooded (another connection from its address was cut off lately)."""
        if self.closing is not None:
            return False
        if address_flooded:
            reason = "refused by a limit, from an address that is flooding"
        elif self.limits_left.spend(now):
            return False
        else:
            reason = (f"still flooding after {LIMITED_BEFORE_DISCONNECT} requests refused by"
                      " a limit")
        self.closing = Close(reason, warning=True, flooding=True)
        return True

    def _read_proxy_header(self, data: bytes) -> bytes:
        """--proxy-protocol: the client's real address comes first, from the proxy. What
        follows the header, if anything yet."""
        assert self._proxy is not None
        try:
            parsed = self._proxy.feed(data)
        except ProxyHeaderError as error:
            self._proxy = None
            self.closing = Close(str(error), abort=True)
            return b""
        if parsed is None:
            return b""
        self._proxy = None
        self._header_deadline = math.inf
        header, rest = parsed
        if header.source is not None:
            host, port = header.source
            self.peer, self.address = f"{host}:{port}", host
        return rest

    def receive_eof(self) -> None:
        """The client sent its last byte (or is gone)."""
        if self.closing is None:
            self.closing = Close(CLOSED_BY_CLIENT, abort=self._proxy is not None)
            self._proxy = None

    def close(self, reason: str = CLOSED_BY_SERVER, *, abort: bool = False) -> Close:
        """The server ends the connection (the first reason given is the one that holds)."""
        if self.closing is None:
            self.closing = Close(reason, abort=abort)
        return self.closing

    def allowed_silence(self, logged_in: bool) -> float:
        """How long the client may now stay silent (inf: no limit). A client of the original
        server never PINGs and sends nothing before its user types (PROTOCOL.md, legacy
        dialect (d)): neither it nor a connection that has not sent a byte yet (which may be
        one, at its menu) is closed for silence; TCP keepalive finds the dead ones. Whole
        messages (WebSocket) come from modern clients only: their silence counts from the
        start."""
        splitter = self.splitter
        if not self.messages and (splitter.legacy or not splitter.heard):
            return math.inf
        limits = self.limits
        return limits.idle_timeout_seconds if logged_in else limits.login_timeout_seconds

    def deadline(self, logged_in: bool) -> float:
        """When check() should next be called (inf: only when something changes)."""
        if self.closing is not None:
            return math.inf
        if self._proxy is not None:
            return self._header_deadline
        return self.last_heard + self.allowed_silence(logged_in)

    def check(self, now: float, logged_in: bool, busy: bool = False) -> Close | None:
        """Has the connection been silent too long? busy: a request is in progress or replies
        are piling up, which counts as hearing from the client."""
        if self.closing is not None:
            return self.closing
        if self._proxy is not None:
            if now >= self._header_deadline:
                self._proxy = None
                seconds = self.limits.proxy_header_seconds
                self.closing = Close(f"no PROXY header within {seconds:.0f} s", abort=True)
            return self.closing
        if busy:
            self.last_heard = now
            return None
        silence = self.allowed_silence(logged_in)
        if now - self.last_heard < silence:
            return None
        what = "idle" if logged_in else "not logged in"
        self.closing = Close(f"{what} for {silence:.0f} s")
        return self.closing

    def over_outbound(self, unsent: int) -> bool:
        """True (and closing, dropping what is unsent) when this much unsent output means the
        client has stopped reading."""
        if unsent <= self.limits.outbound_bytes:
            return False
        self.close(f"client not reading ({unsent} bytes unsent)", abort=True)
        return True
