"""Durable webhooks: every event after_event hears, POSTed to the embedder's URL at least once.

Events are written to the webhook outbox (`WebhookOutbox`) in the transaction that keeps them
(an inbox batch's, for chats, friend answers and group events; the change's own for an account,
a friend request or removal and a group founded), so a crash loses none. One node
at a time delivers (`WebhookDeliverer`): the one holding the lease in the database, renewed every
round. It takes the oldest rows, POSTs each conversation's in order (conversations side by side),
deletes what the receiver took (a 2xx) and backs a conversation off, exponentially with jitter,
when its oldest row fails: later events of that conversation wait behind it. A row the receiver
keeps refusing (`WebhookRejected`: a 4xx but 408, 425, 429), or that fails for a day while the
receiver takes other events, is set aside as a dead letter, so that its conversation goes on; an
operator lists, retries or drops dead letters (`chatserver admin webhooks`).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Protocol

import anyio
from attrs import Factory, define, field, frozen

from chatserver.application.hooks import (
    AccountCreated,
    FriendRemoved,
    FriendRequested,
    GroupFounded,
    HookEvent,
)
from chatserver.domain.messages import DirectMessage, FriendAnswer, GroupEvent, GroupMessage
from chatserver.domain.ports import Clock, DeadWebhook, Transaction, UnitOfWork, WebhookRow

log = logging.getLogger("chatserver.webhooks")

# (event_id, event) -> the JSON body to POST (an adapter's: the application knows no JSON).
Encode = Callable[[str, HookEvent], str]

# Conversations excluded by name while they back off; past it the whole round waits instead.
MAX_EXCLUDED = 500
# Seconds between the starts of rounds: while rows go out, and when none did.
ROUND_GAP = 0.02
IDLE_GAP = 0.5


class WebhookRejected(Exception):
    """Raised by a sender when the receiver refused this event itself (an HTTP 4xx but 408,
    425 and 429): sent again as it is, it would be refused again."""


class WebhookSender(Protocol):
    """POSTs one body to the receiver."""

    async def send(self, body: str) -> bool:
        """True if the receiver took it (a 2xx); False or an exception: try again later
        (`WebhookRejected`: the receiver refused this event)."""
        ...

    async def aclose(self) -> None: ...


def conversation_of(event: HookEvent) -> str:
    """The conversation whose events are delivered in order: a pair of users, a group, a user."""
    if isinstance(event, DirectMessage):
        return _pair(event.sender_id, event.recipient_id)
    if isinstance(event, GroupMessage | GroupEvent | GroupFounded):
        return f"group:{event.group_id}"
    if isinstance(event, FriendAnswer):
        return f"user:{event.responder_id}"
    if isinstance(event, FriendRequested | FriendRemoved):
        return _pair(event.user_id, event.friend_id)
    assert isinstance(event, AccountCreated)
    return f"user:{event.user.id}"


def _pair(a: int, b: int) -> str:
    return f"users:{min(a, b)}:{max(a, b)}"


@define
class WebhookRecorder:
    """Turns events into outbox rows: a fresh event_id each, and their conversation."""

    encode: Encode
    # Called with how many rows a commit wrote: the deliverer wakes.
    written: Callable[[int], None] = lambda rows: None

    # event_ids: this process's random prefix and a count (an os.urandom call each would cost
    # several times the rest of a row).
    _prefix: str = field(factory=lambda: secrets.token_hex(8) + "-", init=False)
    _count: Iterator[int] = field(factory=itertools.count, init=False)

    def rows(self, events: Iterable[HookEvent]) -> list[tuple[str, str]]:
        prefix, count = self._prefix, self._count
        return [(conversation_of(e), self.encode(f"{prefix}{next(count):x}", e)) for e in events]

    def add(self, tx: Transaction, now_ms: int, event: HookEvent) -> None:
        """Write one event that no inbox batch carries (an account, a friend request or removal,
        a group founded) in tx: the transaction of the change that made it, so one commit keeps
        both or neither. Call `written(1)` once tx committed."""
        tx.webhooks.add(self.rows([event]), now_ms)


@frozen
class WebhookLimits:
    """How webhooks are delivered (`Config.webhook_limits`)."""

    # Seconds one POST may take, connecting included.
    timeout_seconds: float = 10.0
    # The first retry of a conversation waits about this long, doubling up to retry_max_seconds
    # (each wait is drawn between half and all of it: jitter).
    retry_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # Rows taken per round, and conversations POSTed to at once.
    batch: int = 200
    concurrency: int = 8
    # How long a delivering node's lease lasts; it renews it every round (and at least every
    # poll_seconds), and gives it up when it stops cleanly. A node that dies holding it is
    # replaced once it lapses.
    lease_seconds: float = 20.0
    # How often a node that does not hold the lease checks it (and the outbox's depth).
    poll_seconds: float = 5.0
    # A row is set aside as a dead letter (its conversation goes on) once the receiver refused
    # it this many times (WebhookRejected), or once it has failed for dead_after_seconds while
    # the receiver took other events (a receiver that is down sets nothing aside).
    dead_after_rejections: int = 5
    dead_after_seconds: float = 86400.0


@define
class _Backoff:
    since: float  # anyio.current_time() of the first failure
    delivered_then: int  # WebhookDeliverer.delivered at the first failure
    attempts: int = 0
    rejections: int = 0
    due: float = 0.0  # anyio.current_time()


@define(eq=False)
class WebhookDeliverer:
    """The task that empties the outbox into the receiver (a task of the node)."""

    uow: UnitOfWork
    clock: Clock
    sender: WebhookSender
    owner: str
    limits: WebhookLimits = Factory(WebhookLimits)
    random: Callable[[], float] = random.random
    # What the metrics read: rows waiting and the oldest's time (as of the last look), and
    # counts of POSTs.
    depth: int = 0
    oldest_ms: int | None = None
    delivered: int = 0
    failed: int = 0
    # Dead letters (as of the last look, plus those set aside since).
    dead: int = 0
    leading: bool = False
    _backoff: dict[str, _Backoff] = Factory(dict)
    _wake: anyio.Event = field(factory=anyio.Event)
    _receiver_down: bool = False  # the last round's POSTs all failed
    _looked: float = -math.inf  # when the rows were last counted

    def wake(self, rows: int = 1) -> None:
        """rows were written here: look now rather than at the next poll (and count them
        until the next count of the table)."""
        self.depth += rows
        if self.oldest_ms is None:
            self.oldest_ms = self.clock.now_ms()
        self._wake.set()

    def oldest_age_seconds(self) -> float:
        if self.oldest_ms is None:
            return 0.0
        return max(0.0, (self.clock.now_ms() - self.oldest_ms) / 1000)

    async def run(self) -> None:
        try:
            while True:
                started = anyio.current_time()
                try:
                    delivered = await self.deliver_once()
                except Exception:
                    log.exception("delivering webhooks failed")
                    delivered = False
                await self._pause(started, delivered)
        finally:
            if self.leading:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._give_up_lease()

    async def _give_up_lease(self) -> None:
        """Let another node take over at once (a lease that ends now has lapsed)."""
        now = self.clock.now_ms()
        try:
            await self.uow.run(lambda tx: tx.webhooks.take_lease(self.owner, now, now))
        except Exception:
            log.exception("giving up the webhook lease failed: another node waits for it")
        self.leading = False

    async def _pause(self, started: float, delivered: bool) -> None:
        """Wait before the next round. Rounds cost a transaction (and a scan of the rows that
        wait), so they are spaced: by ROUND_GAP while rows go out (what came meanwhile joins the
        next round), by IDLE_GAP when nothing went; while every POST fails (the receiver is
        down) new rows do not wake the node, only the first retry that is due."""
        if delivered:
            await _sleep_until(started + ROUND_GAP)
            return
        wait_until = started + self.limits.poll_seconds
        if self.leading and self._backoff:
            wait_until = min(wait_until, min(b.due for b in self._backoff.values()))
        with anyio.move_on_after(max(0.0, wait_until - anyio.current_time())):
            if self.leading and self._receiver_down:
                await anyio.sleep_forever()  # until a retry is due, or the next poll
            await self._wake.wait()
        self._wake = anyio.Event()
        await _sleep_until(started + IDLE_GAP)

    async def deliver_once(self) -> bool:
        """One round: take the lease, the oldest rows, POST them, delete those taken. True when
        some were taken (more may wait)."""
        limits = self.limits
        started = anyio.current_time()
        excluding = [c for c, b in self._backoff.items() if b.due > started]
        if len(excluding) > MAX_EXCLUDED:
            return False  # most conversations are failing: the receiver is down; wait
        now = self.clock.now_ms()
        until = now + int(limits.lease_seconds * 1000)

        # Counting the rows costs a scan: once per poll_seconds.
        look = started - self._looked >= limits.poll_seconds

        def take(tx: Transaction) -> tuple[bool, list[WebhookRow], _Stats | None]:
            outbox = tx.webhooks
            stats = (*outbox.stats(), outbox.dead_count()) if look else None
            if not outbox.take_lease(self.owner, now, until):
                return False, [], stats
            return True, outbox.pending(limits.batch, excluding), stats

        self.leading, rows, stats = await self.uow.run(take)
        if stats is not None:
            self._looked = started
            self.depth, self.oldest_ms, self.dead = stats
        if not rows:
            return False
        conversations: dict[str, list[WebhookRow]] = {}
        for row in rows:
            conversations.setdefault(row.conversation, []).append(row)
        # Stop starting POSTs in time for the last to end (it may take timeout_seconds) before
        # the lease does, so that no other node takes over meanwhile.
        deadline = started + max(
            limits.lease_seconds / 4, limits.lease_seconds - limits.timeout_seconds - 2
        )
        taken: list[int] = []
        buried: list[tuple[WebhookRow, str]] = []
        slots = anyio.CapacityLimiter(limits.concurrency)
        async with anyio.create_task_group() as posting:
            for name, queue in conversations.items():
                posting.start_soon(
                    self._post_in_order, name, queue, (taken, buried), slots, deadline
                )
        self._receiver_down = not taken
        if taken or buried:
            died_ms = self.clock.now_ms()

            def settle(tx: Transaction) -> None:
                tx.webhooks.delete(taken)
                for row, reason in buried:
                    tx.webhooks.bury(row, died_ms, reason)

            await self.uow.run(settle)
            self.dead += len(buried)
            self.depth = max(0, self.depth - len(taken) - len(buried))
            if self.depth == 0:
                self.oldest_ms = None
        return bool(taken or buried)

    async def _post_in_order(
        self,
        conversation: str,
        rows: list[WebhookRow],
        outcome: tuple[list[int], list[tuple[WebhookRow, str]]],
        slots: anyio.CapacityLimiter,
        deadline: float,
    ) -> None:
        taken, buried = outcome
        async with slots:
            for row in rows:
                if anyio.current_time() > deadline:
                    return
                failure = await self._post(row)
                if failure is None:
                    taken.append(row.id)
                    continue
                reason = self._back_off(conversation, *failure)
                if reason is None:
                    return
                log.warning("webhook event %d of %s set aside: %s", row.id, conversation, reason)
                buried.append((row, reason))
            self._backoff.pop(conversation, None)

    async def _post(self, row: WebhookRow) -> tuple[bool, str] | None:
        """None if the receiver took row, else (whether it refused it, what happened)."""
        failure: tuple[bool, str] | None = None
        try:
            with anyio.fail_after(self.limits.timeout_seconds + 1):
                if not await self.sender.send(row.body):
                    failure = (False, "not taken")
        except WebhookRejected as refused:
            failure = (True, str(refused) or "refused")
        except Exception as error:
            log.debug("webhook POST failed: %r", error)
            failure = (False, type(error).__name__)
        if failure is None:
            self.delivered += 1
        else:
            self.failed += 1
        return failure

    def _back_off(self, conversation: str, rejected: bool, what: str) -> str | None:
        """Count a failure of the conversation's oldest row: the reason to set the row aside,
        or None (the conversation waits)."""
        limits = self.limits
        now = anyio.current_time()
        backoff = self._backoff.get(conversation)
        if backoff is None:
            backoff = self._backoff[conversation] = _Backoff(now, self.delivered)
        backoff.attempts += 1
        backoff.rejections += rejected
        reason = None
        if backoff.rejections >= limits.dead_after_rejections:
            reason = f"refused {backoff.rejections} times (last: {what})"
        elif now - backoff.since >= limits.dead_after_seconds and (
            self.delivered > backoff.delivered_then
        ):
            hours = (now - backoff.since) / 3600
            reason = f"failed for {hours:.1f} h while others went through (last: {what})"
        if reason is not None:
            del self._backoff[conversation]
            return reason
        ceiling = min(
            limits.retry_max_seconds, limits.retry_seconds * 2 ** min(backoff.attempts - 1, 30)
        )
        backoff.due = anyio.current_time() + ceiling * (0.5 + self.random() / 2)
        if backoff.attempts == 1 or backoff.attempts.bit_count() == 1:
            log.warning(
                "webhook receiver refused %s's oldest event %d times; retrying",
                conversation,
                backoff.attempts,
            )
        return None


# (rows waiting, the oldest's created_ms, dead letters)
_Stats = tuple[int, int | None, int]


async def list_dead(uow: UnitOfWork, limit: int = 1000, after_id: int = 0) -> list[DeadWebhook]:
    """The dead letters, oldest first (`chatserver admin webhooks dead`)."""
    return await uow.run(lambda tx: tx.webhooks.dead(limit, after_id))


async def retry_dead(uow: UnitOfWork, ids: Collection[int] | None) -> int:
    """Put dead letters (every one: None) back in the outbox, after what waits there now."""
    return await uow.run(lambda tx: tx.webhooks.revive(ids))


async def drop_dead(uow: UnitOfWork, ids: Collection[int] | None) -> int:
    """Forget dead letters (every one: None)."""
    return await uow.run(lambda tx: tx.webhooks.drop_dead(ids))


async def _sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - anyio.current_time()))
