"""Serving one request frame, the same on every transport: decode, budget, use case, reply."""

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import anyio

from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.tcp.budget import RequestBudget
from chatserver.adapters.wire.codec import (
    BadRequest,
    Dialect,
    decode,
    encode_bad_request,
    encode_error,
    encode_result,
)
from chatserver.adapters.wire.errors import BAD_REQUEST, errno_and_message
from chatserver.application.connection import Connection
from chatserver.domain.errors import ChatError, RateLimited, Unavailable

if TYPE_CHECKING:
    from chatserver.adapters.tcp.connection import TransportLimits

log = logging.getLogger("chatserver.tcp")

STOPPING = "server stopping: try again on a new connection"


class RequestServing:
    """What a transport's client object mixes in to serve frames; it provides the attributes
    below and _queue(frame)."""

    connection: Connection
    dialect: Dialect
    budget: RequestBudget
    metrics: PrometheusMetrics | None
    peer: str
    limits: "TransportLimits"
    close_reason: str
    _refused: int

    def _queue(self, frame: bytes) -> None:
        raise NotImplementedError

    async def _handle(self, frame: bytes) -> None:
        request = decode(frame, self.dialect)
        if isinstance(request, BadRequest):
            self._reply_error(encode_bad_request(request, self.dialect), 0, BAD_REQUEST, 0.0)
            return
        if not self.budget.spend():
            if not self._refused:
                log.info("rate limiting %s user=%s", self.peer, self._user_id())
            self._refused += 1
            error: ChatError = RateLimited()
            reply = encode_error(request, error, self.dialect)
            self._reply_error(reply, request.msgid, errno_and_message(error)[0], 0.0)
            return
        if self.budget.tokens >= self.budget.burst - 1:
            # Quiet long enough to refill: whatever it did before is forgiven.
            self._refused = 0
        started = time.perf_counter()
        try:
            result = await self.connection.handle(request.command, request.claimed_id)
        except ChatError as error:
            log.info("request failed user=%s msgid=%d error=%s reason=%r", self._user_id(),
                     request.msgid, type(error).__name__, error.message)
            reply = encode_error(request, error, self.dialect)
            errno = errno_and_message(error)[0]
            self._reply_error(reply, request.msgid, errno, time.perf_counter() - started)
            return
        except Exception:
            log.exception("request msgid=%d from %s user=%s failed", request.msgid, self.peer,
                          self._user_id())
            reply = encode_error(request, None, self.dialect)
            errno = errno_and_message(None)[0]
            self._reply_error(reply, request.msgid, errno, time.perf_counter() - started)
            return
        for reply in encode_result(request, result, self.dialect):
            self._queue(reply)
        self.connection.replied()
        if self.metrics is not None:
            self.metrics.request(request.msgid, 0, time.perf_counter() - started)

    def _refuse_stopping(self, frame: bytes) -> None:
        """Server shutdown: a request read but not started is answered errno 11, not served."""
        request = decode(frame, self.dialect)
        if isinstance(request, BadRequest):
            reply = encode_bad_request(request, self.dialect)
        else:
            reply = encode_error(request, Unavailable(STOPPING), self.dialect)
        if reply is not None:
            self._queue(reply)

    def _flooding(self) -> bool:
        """True (logged, and the close reason set) once the client has been refused more than
        the limit without slowing down enough for its budget to refill: it is cut off."""
        if self._refused <= self.limits.refused_before_disconnect:
            return False
        log.warning("closing %s: still flooding after %d refused requests", self.peer,
                    self._refused)
        self.close_reason = "flooding"
        return True

    def _reply_error(self, reply: bytes | None, msgid: int, errno: int, seconds: float) -> None:
        if reply is not None:
            self._queue(reply)
        if self.metrics is not None:
            self.metrics.request(msgid, errno, seconds)

    def _user_id(self) -> str:
        session = self.connection.session
        return str(session.user.id) if session is not None else "-"



class StoppingClient(Protocol):
    """What a server's shutdown needs of each of its clients, whatever the transport."""

    connection: Connection
    peer: str

    def stop_reading(self) -> None: ...

    async def requests_done(self) -> None: ...

    def release(self) -> None: ...


async def log_out_everyone(clients: Iterable[StoppingClient], request_grace: float) -> None:
    """A server's shutdown once it accepts no more: stop reading, let requests being served
    finish and be answered (for at most request_grace), log every session out (friends are
    told, unreceipted messages stored), then let each connection send what is queued."""
    clients = list(clients)
    for client in clients:
        client.stop_reading()
    await wait_for_requests([client.requests_done for client in clients], request_grace)
    for client in clients:
        try:
            await client.connection.disconnect("server stopping")
        except Exception:
            log.exception("logging out %s failed", client.peer)
    for client in clients:
        client.release()


async def wait_for_requests(requests_done: list[Callable[[], Awaitable[None]]],
                            seconds: float) -> None:
    """Shutdown: wait for the request in hand on every connection, for at most seconds."""
    with anyio.move_on_after(seconds) as waiting:
        for done in requests_done:
            await done()
    if waiting.cancelled_caught:
        log.warning("requests still in hand after %.0f s: logging out anyway", seconds)
