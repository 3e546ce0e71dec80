"""A node: one server process's collaborators and the sessions it holds."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from attrs import Factory, define, field

from chatserver.application.gaps import GapFiller
from chatserver.application.groups_directory import GroupDirectory
from chatserver.application.handling import Handlers
from chatserver.application.hooks import Authenticator, BeforeSend, EventFeed, HookEvent, Hooks
from chatserver.application.inbox_writer import InboxWrite, InboxWriter
from chatserver.application.message_ids import MessageIdAllocator
from chatserver.application.router import Router
from chatserver.application.sessions import SessionRegistry
from chatserver.application.strangers import StrangerGate, TokenBuckets
from chatserver.application.throttle import (
    FailureWindow,
    HashQueue,
    LoginThrottle,
    RegistrationThrottle,
)
from chatserver.application.webhooks import WebhookRecorder
from chatserver.domain.groups import DEFAULT_MEMBER_LIMIT
from chatserver.domain.ports import (
    Clock,
    FileLinks,
    MessageBus,
    Metrics,
    PasswordHasher,
    Presence,
    Transaction,
    UnitOfWork,
)

log = logging.getLogger("chatserver")


@define
class Limits:
    """Bounds that keep one client from costing the server without end (README lists them)."""

    # Live deliveries a receipting session may hold unreceipted before it is ended.
    unreceipted_per_session: int = 1000
    message_id_block: int = 1000
    # Devices a user may be logged in on at once; a login on one more ends the oldest.
    devices_per_user: int = 8
    # Days messages are kept in inboxes; 0: only until every device of the user has had them.
    history_days: int = 30
    # Wrong passwords allowed per (account, client address), and per client address, within
    # a minute: past them, errno 9. Per account from every address together, past a much
    # larger ceiling, logins of that account are slowed down (never refused: no lockout).
    failed_logins_per_account_and_address: int = 10
    failed_logins_per_address: int = 100  # 0: no limit per address (behind a proxy)
    failed_logins_before_slowing: int = 50
    slowed_login_seconds: float = 1.0
    failed_login_window_seconds: float = 60.0
    # Accounts created per client address within a minute and within an hour (0: no limit).
    registrations_per_minute: int = 10
    registrations_per_hour: int = 100
    # REG requests per client address within a minute, whatever their outcome (0: no limit).
    registration_attempts_per_minute: int = 60
    # Password hashes at a time (the hasher's threads), and how many may wait for one:
    # from one address, and logins and registrations overall. Past them: errno 9, errno 11.
    # Groups one user may belong to (created or joined), and create within an hour; past
    # them: errno 9. Group rosters kept in memory (the oldest loaded is dropped past it).
    groups_per_user: int = 500
    groups_created_per_hour: int = 20
    rosters_cached: int = 10_000
    hash_slots: int = 2
    hashes_waiting_per_address: int = 256
    logins_waiting: int = 1024
    registrations_waiting: int = 256
    # Messages a login pushes at most to a device that fell behind (the newest of what
    # waits for it); the older ones stay readable with SYNC within the history window.
    stored_per_user: int = 10_000
    # Members one group may have; past it ADD_GROUP is errno 12 (0: no limit).
    group_members: int = DEFAULT_MEMBER_LIMIT
    # Group changes (joining, leaving and every administration request) one user may make
    # within a minute: each tells every member (a GROUP_EVENT in each inbox). Past it: errno 9.
    group_changes_per_minute: int = 60
    # BLOCK requests that change something, per user and minute (each may end a friendship
    # and tells other nodes). Past it: errno 9.
    block_changes_per_minute: int = 30
    # Messages to one user not online on this node from strangers (not friends, no group in
    # common), all of them together: a burst, then per minute (0: no limit). Past it: errno 9.
    stranger_messages_burst: int = 1000
    stranger_messages_per_minute: int = 600
    # Strangers' messages are refused (errno 14) while this many wait for the recipient that
    # none of their devices has received (friends' messages never are): the share of
    # stored_per_user strangers may fill. 0: no share.
    stranger_stored_share: int = 1000
    # Inbox entries one group's messages may write (one per member): a burst, then per second.
    # Past it GROUP_CHAT is errno 9 (0 per second: no limit). A group bigger than the burst
    # sends when it is full.
    group_entries_burst: int = 20_000
    group_entries_per_second: int = 20_000
    # Files (PROTOCOL.md Version 2, "Files"): bytes per file, and bytes a user may upload in
    # any 24 hours; past them FILE_UPLOAD is errno 14. Signed upload and download paths last
    # file_link_seconds.
    file_bytes: int = 20 * 1024 * 1024
    file_bytes_per_day: int = 1024 * 1024 * 1024
    file_link_seconds: int = 600


@define
class UserLocks:
    """One lock per user id, so logins and logouts of one user never interleave."""

    locks: dict[int, tuple[anyio.Lock, int]] = Factory(dict)

    @asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        # Taken at once when free (as it nearly always is): no extra turn of the event loop.
        lock, users = self.locks.get(user_id) or (anyio.Lock(fast_acquire=True), 0)
        self.locks[user_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.locks[user_id]
            if users == 1:
                del self.locks[user_id]
            else:
                self.locks[user_id] = (lock, users - 1)


class NoMetrics:
    """Metrics that go nowhere: the default when nobody scrapes."""

    def routed(self, outcome: str, count: int = 1) -> None:
        pass

    def waiting_at_login(self, count: int) -> None:
        pass

    def inbox_batch(self, entries: int) -> None:
        pass


@define(eq=False)
class Node:
    """Everything a use case may need; built once by bootstrap, shared by every connection."""

    node_id: str
    uow: UnitOfWork
    hasher: PasswordHasher
    clock: Clock
    presence: Presence
    bus: MessageBus
    limits: Limits = Factory(Limits)
    metrics: Metrics = Factory(NoMetrics)
    sessions: SessionRegistry = Factory(SessionRegistry)
    user_locks: UserLocks = Factory(UserLocks)
    # The embedder's: who a LOGIN's token names (None: tokens are errno 7), and its hooks.
    authenticator: Authenticator | None = None
    hooks: Hooks = Factory(Hooks)
    # Writes events to the webhook outbox (None: no webhook).
    webhooks: WebhookRecorder | None = None
    # Where files are uploaded and downloaded (the web port's signed paths); None: no web port,
    # FILE_UPLOAD and FILE_URL are errno 11.
    file_links: FileLinks | None = None
    # The use cases that serve its connections' requests (bootstrap attaches
    # application.dispatch.HANDLERS; none by default).
    handlers: Handlers = Factory(Handlers)
    before_send: BeforeSend | None = field(init=False)
    events: EventFeed | None = field(init=False)
    writer: InboxWriter = field(init=False)
    gaps: GapFiller = field(init=False)
    router: Router = field(init=False)
    groups: GroupDirectory = field(init=False)
    message_ids: MessageIdAllocator = field(init=False)
    login_throttle: LoginThrottle = field(init=False)
    registrations: RegistrationThrottle = field(init=False)
    hashing: HashQueue = field(init=False)
    group_creations: FailureWindow = field(init=False)
    group_changes: FailureWindow = field(init=False)
    block_changes: FailureWindow = field(init=False)
    strangers: StrangerGate = field(init=False)
    group_entries: TokenBuckets = field(init=False)

    def __attrs_post_init__(self) -> None:
        limits = self.limits
        window = limits.failed_login_window_seconds
        self.login_throttle = LoginThrottle(
            FailureWindow(limits.failed_logins_per_account_and_address, window),
            FailureWindow(limits.failed_logins_per_address, window)
            if limits.failed_logins_per_address
            else None,
            FailureWindow(limits.failed_logins_before_slowing, window),
            limits.slowed_login_seconds,
        )
        self.registrations = RegistrationThrottle(
            FailureWindow(limits.registrations_per_minute, 60.0),
            FailureWindow(limits.registrations_per_hour, 3600.0),
            FailureWindow(limits.registration_attempts_per_minute, 60.0),
        )
        self.hashing = HashQueue(
            limits.hash_slots,
            limits.hashes_waiting_per_address,
            limits.logins_waiting,
            limits.registrations_waiting,
        )
        self.writer = InboxWriter(
            self.uow, self.clock, self._pushed_after_commit, history_days=limits.history_days
        )
        self.writer.observe = self._observe_batch
        if self.webhooks is not None:
            self.writer.webhook_rows = self.webhooks.rows
            self.writer.webhooks_written = self.webhooks.written
        self.gaps = GapFiller(self.uow)
        self.router = Router(
            self.node_id, self.sessions, self.presence, self.bus, self.writer, self.metrics
        )
        self.groups = GroupDirectory(self.uow, self.limits.rosters_cached)
        self.group_creations = FailureWindow(self.limits.groups_created_per_hour, 3600.0)
        self.group_changes = FailureWindow(self.limits.group_changes_per_minute, 60.0)
        self.block_changes = FailureWindow(self.limits.block_changes_per_minute, 60.0)
        limits = self.limits
        self.strangers = StrangerGate(
            TokenBuckets(
                limits.stranger_messages_burst if limits.stranger_messages_per_minute else 0,
                limits.stranger_messages_per_minute / 60.0,
            ),
            limits.stranger_stored_share,
        )
        self.group_entries = TokenBuckets(
            limits.group_entries_burst if limits.group_entries_per_second else 0,
            limits.group_entries_per_second,
        )
        self.message_ids = MessageIdAllocator(self.uow, self.limits.message_id_block)
        hooks = self.hooks
        self.before_send = hooks.before_send
        self.events = (
            EventFeed(hooks.after_event, hooks.after_event_queue, hooks.after_event_seconds)
            if hooks.after_event is not None
            else None
        )

    def share_cluster_rates(self, nodes: int) -> None:
        """The cluster has `nodes` nodes (this one included; told by the bus now and then):
        the strangers' rate per recipient and a group's inbox entries per second, kept in
        memory by each node, are enforced here at 1/nodes each, so that the cluster as a
        whole lets through what the limits say (README, after the Limits table)."""
        share = 1.0 / max(1, nodes)
        self.strangers.per_recipient.share = share
        self.group_entries.share = share

    def record(self, tx: Transaction, event: HookEvent) -> None:
        """Write event, a change no inbox batch carries (an account, a friend request or
        removal, a group founded), to the webhook outbox in tx, the transaction making the
        change: one commit keeps both. Nothing without a webhook. `tell` it once committed."""
        if self.webhooks is not None:
            self.webhooks.add(tx, self.clock.now_ms(), event)

    def tell(self, event: HookEvent) -> None:
        """event (`record`ed in its transaction) was committed: after_event hears of it and the
        webhook deliverer wakes."""
        if self.events is not None:
            self.events.emit(event)
        if self.webhooks is not None:
            self.webhooks.written(1)

    def _pushed_after_commit(self, write: InboxWrite) -> None:
        self.router.push_local(write)
        events = self.events
        if events is not None:
            # One event per delivery, however many inboxes keep it.
            seen: set[int] = set()
            for _, delivery in write.entries:
                if id(delivery) not in seen:
                    seen.add(id(delivery))
                    events.emit(delivery)

    def _observe_batch(self, entries: int) -> None:
        self.metrics.inbox_batch(entries)
        self.metrics.routed("kept", entries)
