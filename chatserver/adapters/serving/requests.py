"""Serving one request frame, the same on every transport: decode, budget, use case, reply."""

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

import anyio

from chatserver.adapters.connection_core import (
    CLOSED_BY_CLIENT,
    CLOSED_BY_SERVER,
    Close,
    ConnectionCore,
    Refused,
    TransportLimits,
)
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.serving.settings import RequestBudget
from chatserver.adapters.wire.codec import (
    BadRequest,
    Dialect,
    Request,
    decode,
    encode_bad_request,
    encode_error,
    encode_event,
    encode_result,
)
from chatserver.adapters.wire.errors import BAD_REQUEST, errno_and_message
from chatserver.application.commands import Read, Receipt, SendDirectMessage, SendGroupMessage
from chatserver.application.connection import Connection
from chatserver.application.results import LoggedIn, MessageAccepted, Result
from chatserver.domain.errors import ChatError, RateLimited, Unavailable
from chatserver.domain.messages import Event

log = logging.getLogger("chatserver.tcp")

Callback = Callable[[], Awaitable[None]]

STOPPING = "server stopping: try again on a new connection"

class LogBudget:
    """Lines of one kind logged per second, over the whole process: a flood of failing
    requests (a REG of a taken name, 10,000 a second) must not become a flood of log lines.
    The line after a gap says how many were left out."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.budget = RequestBudget(per_second, burst)
        self.dropped = 0

    def allow(self) -> bool:
        if self.budget.spend():
            return True
        self.dropped += 1
        return False

    def skipped(self) -> str:
        dropped, self.dropped = self.dropped, 0
        return f" ({dropped} similar lines left out)" if dropped else ""


# "request failed" lines: 20 a second after a burst of 100 (README, "Logs").
FAILURE_LOG = LogBudget(20.0, 100)
# Lines about connections refused before their first request (not a trusted proxy, too many
# from one address): 10 a second after a burst of 50.
REFUSAL_LOG = LogBudget(10.0, 50)


def log_close(peer: str, closing: Close | None) -> None:
    """Log why the server ends a connection (a client's own close is not news)."""
    if closing is None or closing.reason == CLOSED_BY_CLIENT:
        return
    if not closing.warning:
        log.info("closing %s: %s", peer, closing.reason)
    elif REFUSAL_LOG.allow():
        log.warning("closing %s: %s%s", peer, closing.reason, REFUSAL_LOG.skipped())


# Requests that may be served while the ones before them on their connection still wait
# (pipelining): they wait for a group commit, and nothing the connection does next depends on
# their outcome. Every other request waits until each one before it is answered.
PIPELINED: frozenset[type[Any]] = frozenset({SendDirectMessage, SendGroupMessage, Receipt, Read})
# Requests of one connection in flight past which its next frames are not served (nor, once
# the transport's queue is full, read) until the oldest is answered: backpressure, no error.
IN_FLIGHT_LIMIT = 64


class _Slot:
    """One request in flight: its replies wait here until every earlier one's have gone.
    A request that joins an inbox batch is answered by calling its slot (the batch's
    writer does, after the commit): one object per chat, no closure."""

    __slots__ = ("done", "replies", "request", "serving", "started", "task")

    def __init__(self) -> None:
        self.done = False
        self.replies: list[bytes] = []
        self.task: Any = None  # the transport's handle on the task serving it, kept alive
        self.serving: RequestServing | None = None
        self.request: Request | None = None
        self.started = 0.0

    def __call__(self, outcome: Result | ChatError) -> None:
        serving, request = self.serving, self.request
        assert serving is not None and request is not None
        serving._answer_joined(self, request, self.started, outcome)


class RequestServing:
    """What every transport's client object shares around its ConnectionCore: the Outbox port
    (push, bounded by the core), why the connection ends (close_reason, logged once), and
    serving the frames the core hands out. The transport provides the attributes below,
    _queue(frame), _unsent(), close(reason) and _spawn(function, *args).

    Pipelining: a request in PIPELINED is served by a task of its own, and the connection goes
    on with its next frames meanwhile (so one connection's chats share a group commit).
    Replies still go out in request order: a request served while earlier ones are in flight
    has a slot in _slots, and its replies wait there. Any other request waits, before it is
    served, until every earlier one is answered (_serve_frame returns that wait), so what
    PROTOCOL.md says of frames handled in order holds (a LOGOUT after chats, a LOGIN after
    them). The budget is charged as each frame is taken, as before."""

    connection: Connection
    dialect: Dialect
    metrics: PrometheusMetrics | None
    peer: str
    limits: TransportLimits
    core: ConnectionCore
    _refused: int
    _closed: bool  # nothing more is written
    _logged: bool = False  # the core's verdict is logged

    def _unsent(self) -> int:
        """Bytes queued or held by the transport, not yet taken by the kernel."""
        raise NotImplementedError

    def close(self, reason: str = CLOSED_BY_SERVER) -> None:
        raise NotImplementedError

    # The Outbox port.

    def push(self, event: Event) -> bool:
        if self._closed:
            return False
        frame = encode_event(event, self.dialect)
        if frame is None:
            return True
        if self.core.over_outbound(self._unsent() + len(frame)):
            self._verdict()
            self.close()
            return False
        self._queue(frame)
        return True

    def _abort(self, reason: str) -> None:
        """close(): the server's reason, unless the core has one; what is unsent is dropped."""
        if self.core.closing is None:
            self.core.close(reason, abort=True)
            self._verdict()

    @property
    def close_reason(self) -> str:
        """Why the connection ends, as the core has it (the first reason given holds)."""
        closing = self.core.closing
        return closing.reason if closing is not None else CLOSED_BY_CLIENT

    @close_reason.setter
    def close_reason(self, reason: str) -> None:
        self.core.close(reason)

    def _verdict(self) -> None:
        """The connection is to end: log why (once)."""
        if not self._logged and self.core.closing is not None:
            self._logged = True
            log_close(self.peer, self.core.closing)

    # Requests in flight, oldest first (empty while none is); where replies go meanwhile.
    _slots: "deque[_Slot]"
    _answering: _Slot | None = None
    # Pipelined requests handed to a task that has not run yet.
    _unstarted: int = 0
    _slots_moved: anyio.Event | None = None

    def _queue(self, frame: bytes) -> None:
        raise NotImplementedError

    def _spawn(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> Any:
        """Run function(*args) in a task of the connection's; return a handle to keep."""
        raise NotImplementedError

    # Runs an inbox batch's leader in a task that outlives the connection (None: the
    # transport has none, and a chat that finds no batch gathering gets a task of its own).
    _lead: Callable[[Coroutine[Any, Any, None]], None] | None = None

    def _start_serving(self) -> None:
        self._slots = deque()

    def _serve_item(self, item: "bytes | Refused") -> Coroutine[Any, Any, None] | None:
        """_serve_frame for what the ConnectionCore handed out (already charged to the
        request budget): a frame to serve, or one refused for being over the budget (errno 9,
        in order)."""
        if type(item) is bytes:
            return self._serve_frame(item)
        assert isinstance(item, Refused)
        self._refuse_in_order(item.frame)
        return None

    def _serve_frame(self, frame: bytes) -> Coroutine[Any, Any, None] | None:
        """Serve one request as far as it goes without a task: None once it is answered (or
        has joined an inbox batch, or been handed to a task of its own, PIPELINED), else the
        rest of it, a coroutine the connection's task awaits before the next frame is served
        (the request waits for a use case, or for those before it)."""
        request = decode(frame, self.dialect)
        if isinstance(request, BadRequest):
            reply = encode_bad_request(request, self.dialect)
            self._in_order(lambda: self._reply_error(reply, 0, BAD_REQUEST, 0.0))
            return None
        # The clock is read for the request histogram only.
        started = time.perf_counter() if self.metrics is not None else 0.0
        pipelined = type(request.command) in PIPELINED and self.limits.pipeline
        if self._slots:
            # Earlier requests are in flight: this one's replies wait behind theirs, and a
            # request that is not PIPELINED waits for them to be answered first.
            slot = _Slot()
            self._slots.append(slot)
            if not pipelined:
                return self._serve_after(slot, request, started)
            if len(self._slots) > IN_FLIGHT_LIMIT:
                return self._pipeline_later(slot, request, started)
            self._pipeline(slot, request, started)
            return None
        if pipelined:
            slot = _Slot()
            self._slots.append(slot)
            self._pipeline(slot, request, started)
            return None
        return self._serve_request(request, started)

    def _in_order(self, reply: Callable[[], None]) -> None:
        """Call reply (which queues replies) so that they go out behind those of every
        request in flight."""
        if not self._slots:
            reply()
            return
        slot = _Slot()
        self._slots.append(slot)
        self._answering = slot
        try:
            reply()
        finally:
            self._answering = None
        self._slot_answered(slot)

    def _refuse_in_order(self, frame: bytes) -> None:
        self._in_order(lambda: self._refuse(frame))

    def _pipeline(self, slot: _Slot, request: Request, started: float) -> None:
        """Serve a PIPELINED request: joining the inbox batch being gathered when it can (no
        task: answered by that batch's writer after the commit), else in a task of its own."""
        if not self._unstarted:  # else an earlier chat might still take its place after this
            slot.serving, slot.request, slot.started = self, request, started
            try:
                joined = self.connection.handle_joining(
                    request.command, request.claimed_id, slot, self._lead)
            except ChatError as error:
                self._answering = slot
                self._failed(request, error, started)
                self._answering = None
                self._slot_answered(slot)
                return
            except Exception:
                self._answering = slot
                self._crashed(request, started)
                self._answering = None
                self._slot_answered(slot)
                return
            if joined:
                return
        self._unstarted += 1
        slot.task = self._spawn(self._pipelined, slot, request, started)

    def _answer_joined(self, slot: _Slot, request: Request, started: float,
                       outcome: Result | ChatError) -> None:
        """A request that joined a batch is answered (called by that batch's writer)."""
        if type(outcome) is MessageAccepted:  # the common case, _answer without its turns
            try:
                slot.replies += encode_result(request, outcome, self.dialect)
                if self.metrics is not None:
                    self.metrics.request(request.msgid, 0, time.perf_counter() - started)
            finally:
                self._slot_answered(slot)
            return
        self._answering = slot
        try:
            if isinstance(outcome, ChatError):
                self._failed(request, outcome, started)
            else:
                self._answer(request, outcome, started)
        finally:
            self._answering = None
            self._slot_answered(slot)

    async def _serve_request(self, request: Request, started: float) -> None:
        """A request that is not PIPELINED, awaited by the connection's task."""
        try:
            result = await self.connection.handle(request.command, request.claimed_id)
        except ChatError as error:
            self._failed(request, error, started)
        except Exception:
            self._crashed(request, started)
        else:
            self._answer(request, result, started)

    async def _serve_after(self, slot: _Slot, request: Request, started: float) -> None:
        """A request that is not pipelined: served once every earlier one is answered."""
        slots = self._slots
        while slots[0] is not slot:
            await self._slots_moving()
        slots.popleft()  # nothing is in flight now, and nothing is read meanwhile
        await self._serve_request(request, started)

    async def _pipeline_later(self, slot: _Slot, request: Request, started: float) -> None:
        """Too many in flight: this connection's next frames wait until one is answered."""
        while len(self._slots) > IN_FLIGHT_LIMIT:
            await self._slots_moving()
        self._pipeline(slot, request, started)

    async def _pipelined(self, slot: _Slot, request: Request, started: float) -> None:
        """A PIPELINED request, in a task of its own: serve it, then answer in request order."""
        self._unstarted -= 1  # and the use case takes its turn (Turns) in this same step
        try:
            try:
                result = await self.connection.handle(request.command, request.claimed_id)
            except ChatError as error:
                self._answering = slot
                self._failed(request, error, started)
            except Exception:
                self._answering = slot
                self._crashed(request, started)
            else:
                self._answering = slot
                self._answer(request, result, started)
        finally:
            self._answering = None
            self._slot_answered(slot)

    def _slot_answered(self, slot: _Slot) -> None:
        """slot's request is answered: send every reply that no earlier request holds up."""
        slot.done = True
        slot.task = None
        slots = self._slots
        if slots[0] is not slot:
            return
        queue = self._queue
        while slots and slots[0].done:
            for reply in slots.popleft().replies:
                queue(reply)
        moved = self._slots_moved
        if moved is not None:
            self._slots_moved = None
            moved.set()

    async def _slots_moving(self) -> None:
        if self._slots_moved is None:
            self._slots_moved = anyio.Event()
        await self._slots_moved.wait()

    async def _in_flight_answered(self) -> None:
        """Until every request in flight on this connection is answered."""
        while self._slots:
            await self._slots_moving()

    def _reply(self, frame: bytes) -> None:
        slot = self._answering
        if slot is None:
            self._queue(frame)
        else:
            slot.replies.append(frame)

    def _refuse(self, frame: bytes) -> None:
        """Over the budget: errno 9 (with the msgid and seq of the frame, if it has them)."""
        if not self._refused:
            log.info("rate limiting %s user=%s", self.peer, self._user_id())
        self._refused += 1
        request = decode(frame, self.dialect)
        msgid = request.msgid if isinstance(request, Request) else request.reply_to
        error: ChatError = RateLimited()
        reply = encode_error(request, error, self.dialect)
        self._reply_error(reply, msgid, errno_and_message(error)[0], 0.0)

    def _answer(self, request: Request, result: Result, started: float) -> None:
        for reply in encode_result(request, result, self.dialect):
            self._reply(reply)
        if type(result) is LoggedIn:  # the hook after LOGIN: the new session may now hear
            self.connection.replied()
        if self.metrics is not None:
            self.metrics.request(request.msgid, 0, time.perf_counter() - started)

    def _failed(self, request: Request, error: ChatError, started: float) -> None:
        if FAILURE_LOG.allow():
            log.info("request failed user=%s msgid=%d error=%s reason=%r%s", self._user_id(),
                     request.msgid, type(error).__name__, error.message, FAILURE_LOG.skipped())
        reply = encode_error(request, error, self.dialect)
        errno = errno_and_message(error)[0]
        self._reply_error(reply, request.msgid, errno, self._since(started))
        if type(error) is RateLimited:
            self._limited()

    def _limited(self) -> None:
        """A request was refused errno 9 by a limit of the server's ("try again later"): the
        transport counts it against the connection (ConnectionCore.limited) and its address,
        and cuts a flooder off, dropping what it sent that is not served yet."""

    def _crashed(self, request: Request, started: float) -> None:
        log.exception("request msgid=%d from %s user=%s failed", request.msgid, self.peer,
                      self._user_id())
        reply = encode_error(request, None, self.dialect)
        errno = errno_and_message(None)[0]
        self._reply_error(reply, request.msgid, errno, self._since(started))

    def _since(self, started: float) -> float:
        return time.perf_counter() - started if self.metrics is not None else 0.0

    def _refuse_stopping(self, frame: bytes) -> None:
        """Server shutdown: a request read but not started is answered errno 11, not served."""
        request = decode(frame, self.dialect)
        if isinstance(request, BadRequest):
            reply = encode_bad_request(request, self.dialect)
        else:
            reply = encode_error(request, Unavailable(STOPPING), self.dialect)
        if reply is not None:
            self._reply_behind(reply)

    def _reply_behind(self, reply: bytes) -> None:
        """A reply to a frame not served (shutdown): behind those of requests in flight."""
        if self._slots:
            slot = _Slot()
            slot.replies.append(reply)
            self._slots.append(slot)
            self._slot_answered(slot)
        else:
            self._queue(reply)

    def _reply_error(self, reply: bytes | None, msgid: int, errno: int, seconds: float) -> None:
        if reply is not None:
            self._reply(reply)
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
