"""The embedder's callables: who a token names, what may be sent, and what happened.

`Authenticator` maps a LOGIN's token to a user name (PROTOCOL.md Version 2, "Tokens").
`before_send` looks at each chat before it is kept: allow it, refuse it (errno 12 with its
reason) or rewrite its text, within a time limit. `after_event` hears of every accepted chat,
friendship, group and account change after its commit, from a bounded queue drained by a
task of the node: the message path never waits for it, and a failing or slow hook only loses
its own events (counted and logged).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from attrs import define, field, frozen

from chatserver.domain.errors import NotPermitted
from chatserver.domain.messages import Delivery, check_message_text
from chatserver.domain.users import User

log = logging.getLogger("chatserver.hooks")

# A token's user name (the account is created on first sight), or None: the token is refused.
Authenticator = Callable[[str], Awaitable[str | None]]


@frozen
class Outgoing:
    """A chat about to be kept: who sends it, to whom (a user, or a group) and its text."""

    sender: User
    text: str
    recipient_id: int | None = None
    group_id: int | None = None


@frozen
class Allow:
    """Let the chat through, with text instead of the sender's when given."""

    text: str | None = None


@frozen
class Reject:
    """Refuse the chat: the sender gets errno 12 with reason."""

    reason: str = "refused by the server's policy"


BeforeSend = Callable[[Outgoing], Awaitable[Allow | Reject]]


@frozen
class AccountCreated:
    """An account was made: by REG, by a token's first login, or from code."""

    user: User


@frozen
class FriendRequested:
    """user_id asked friend_id to be friends (ADD_FRIEND accepted; when friend_id had asked
    first they are friends now, and a FriendAnswer follows)."""

    user_id: int
    friend_id: int


@frozen
class FriendRemoved:
    """user_id ended the friendship with friend_id."""

    user_id: int
    friend_id: int


@frozen
class GroupFounded:
    """creator_id made a group (its later changes come as GroupEvent)."""

    group_id: int
    creator_id: int
    name: str


# What after_event hears: a kept delivery (a chat, a friend answer, a group event), or one of
# the changes above.
HookEvent = Delivery | AccountCreated | FriendRequested | FriendRemoved | GroupFounded
AfterEvent = Callable[[HookEvent], Awaitable[None]]


@define
class Hooks:
    """The embedder's hooks and their bounds (`Config.hooks`)."""

    before_send: BeforeSend | None = None
    # Seconds before_send may take; past them the chat is allowed or refused (on_timeout).
    before_send_seconds: float = 1.0
    on_timeout: Literal["allow", "reject"] = "allow"
    after_event: AfterEvent | None = None
    # Events waiting for after_event; past it the newest are dropped (counted and logged).
    after_event_queue: int = 10_000
    # Seconds one after_event call may take before it is cancelled.
    after_event_seconds: float = 10.0


async def check_before_send(hooks: Hooks, before_send: BeforeSend, outgoing: Outgoing) -> str:
    """The text to keep, after before_send had its say. Raises NotPermitted (errno 12)."""
    verdict: Allow | Reject | None = None
    try:
        with anyio.move_on_after(hooks.before_send_seconds):
            verdict = await before_send(outgoing)
    except Exception:
        log.exception("before_send failed: the chat is handled as on a timeout")
    if verdict is None:
        if hooks.on_timeout == "reject":
            raise NotPermitted("the message could not be checked: try again")
        return outgoing.text
    if isinstance(verdict, Reject):
        raise NotPermitted(verdict.reason)
    if verdict.text is None:
        return outgoing.text
    # A rewritten text obeys the rules a client's does.
    check_message_text(verdict.text)
    return verdict.text


@define(eq=False)
class EventFeed:
    """A bounded queue of events for after_event, drained by `run` (a task of the node)."""

    after_event: AfterEvent
    limit: int = 10_000
    seconds: float = 10.0
    dropped: int = 0
    failed: int = 0
    delivered: int = 0
    _queue: deque[HookEvent] = field(factory=deque)
    _ready: anyio.Event = field(factory=anyio.Event)

    def emit(self, event: HookEvent) -> None:
        """Queue event without waiting; past the limit it is dropped and counted."""
        if len(self._queue) >= self.limit:
            self.dropped += 1
            if self.dropped == 1 or math.log2(self.dropped).is_integer():
                log.warning("after_event is behind: %d events dropped so far", self.dropped)
            return
        self._queue.append(event)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        queue = self._queue
        while True:
            while not queue:
                await self._ready.wait()
                self._ready = anyio.Event()
            event = queue.popleft()
            try:
                with anyio.move_on_after(self.seconds) as scope:
                    await self.after_event(event)
                if scope.cancelled_caught:
                    self.failed += 1
                    log.warning("after_event took over %.1f s: cancelled", self.seconds)
                else:
                    self.delivered += 1
            except Exception:
                self.failed += 1
                log.exception("after_event failed")
