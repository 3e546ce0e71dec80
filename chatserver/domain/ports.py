"""The ports: what the core needs from the world, as Protocols that adapters satisfy.

Repositories are synchronous and live inside a transaction, which the unit of work runs
where blocking is allowed (a worker thread for a real database). Everything that waits on
the world (the unit of work, hashing, the cluster) is asynchronous.
"""

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol, TypeVar

from attrs import frozen

from chatserver.domain.files import StoredFile
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import Delivery, Event, Kept
from chatserver.domain.names import NamedId
from chatserver.domain.users import Account, User

T = TypeVar("T")


class UserRepository(Protocol):
    def add(self, name: str, password_hash: str) -> User:
        """Create a user; raises NameTaken if the name, or one with its name_key, is in use."""
        ...

    def get(self, user_id: int) -> User | None: ...

    def account(self, user_id: int) -> Account | None: ...

    def account_by_name(self, name: str) -> Account | None: ...

    def name_in_use(self, name: str) -> bool:
        """Whether add(name) would raise NameTaken: the name, or one with its name_key, is
        held by a user (deleted accounts' names are free)."""
        ...

    def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        """Replace the user's password hash; False when there is no such user."""
        ...

    def set_suspended(self, user_id: int, until_ms: int | None) -> bool:
        """Suspend the user until until_ms (None: lift it); False when there is no such user."""
        ...

    def accounts(self, after_id: int, limit: int) -> list[Account]:
        """The accounts with ids above after_id, ascending, at most limit of them."""
        ...

    def restore(self, account: Account) -> None:
        """Create the account with its own id (importing it); ids handed out later are above
        it. Raises NameTaken if its id or its name is in use."""
        ...

    def delete(self, user_id: int) -> bool:
        """Delete the account: its friendships, requests, blocks (both ways), memberships,
        inbox, devices and read mark go, and its name is free; its id never names a user
        again. Messages it sent that others keep show DELETED_USER_NAME as their sender.
        False when there is no such user."""
        ...

    def names(self) -> list[NamedId]:
        """Every user's id and name, and whether the name holds its key (for reports)."""
        ...


class FriendRepository(Protocol):
    def friends_of(self, user_id: int) -> list[User]: ...

    def are_friends(self, a: int, b: int) -> bool: ...

    def befriend(self, a: int, b: int) -> None:
        """Make a and b friends (idempotent)."""
        ...

    def unfriend(self, a: int, b: int) -> None: ...

    def add_request(self, requester_id: int, addressee_id: int) -> None:
        """Record a pending request (idempotent)."""
        ...

    def has_request(self, requester_id: int, addressee_id: int) -> bool: ...

    def remove_request(self, requester_id: int, addressee_id: int) -> bool:
        """Drop a pending request; False if there was none."""
        ...

    def requesters_of(self, addressee_id: int) -> list[User]:
        """Users waiting for addressee's answer, oldest request first."""
        ...

    def requested_by(self, requester_id: int) -> list[int]:
        """The users requester waits on (pending requests it sent), ascending."""
        ...

    def block(self, blocker_id: int, blocked_id: int) -> bool:
        """blocker blocks blocked (BLOCK_MSG); False if they already did. Raises UnknownUser."""
        ...

    def unblock(self, blocker_id: int, blocked_id: int) -> bool:
        """False if blocker did not block blocked."""
        ...

    def is_blocked(self, blocker_id: int, blocked_id: int) -> bool: ...

    def blocked_by(self, blocker_id: int) -> list[int]:
        """The users blocker blocks, ascending."""
        ...

    def blockers_of(self, blocked_id: int) -> list[int]:
        """The users who block blocked, ascending."""
        ...

    def declined_at(self, requester_id: int, addressee_id: int) -> int | None:
        """When (ms) addressee last declined requester's request; None if never or forgotten."""
        ...

    def note_decline(
        self, requester_id: int, addressee_id: int, at_ms: int, *, forget_before_ms: int
    ) -> None:
        """Remember that addressee declined requester at at_ms (replacing an older decline of
        theirs), and forget every decline, of anyone, made before forget_before_ms."""
        ...

    def forget_declines(self, a: int, b: int) -> None:
        """Forget the declines between a and b, both ways (they became friends)."""
        ...

    def declines_of(self, user_id: int) -> list[tuple[int, int, int]]:
        """Every remembered decline user_id is in, either side, as (requester, addressee,
        declined_ms), ascending."""
        ...


class GroupRepository(Protocol):
    def create(self, name: str, description: str, creator_id: int) -> Group:
        """Create a group with its creator as member; raises NameTaken."""
        ...

    def get(self, group_id: int) -> Group | None: ...

    def add_member(self, group_id: int, user_id: int, role: Role) -> bool:
        """Add a member; False if they already were one."""
        ...

    def remove_member(self, group_id: int, user_id: int) -> bool: ...

    def members(self, group_id: int) -> list[Member]: ...

    def groups_of(self, user_id: int) -> list[Group]: ...

    def set_role(self, group_id: int, user_id: int, role: Role) -> bool:
        """Give a member a role; False if they are not a member."""
        ...

    def set_muted(self, group_id: int, user_id: int, until_ms: int) -> bool:
        """Mute a member until until_ms (0: unmute); False if they are not a member."""
        ...

    def update(self, group_id: int, name: str | None, description: str | None) -> Group:
        """Rename a group and/or change its description (None: unchanged); raises NameTaken
        for a name another group has, UnknownGroup."""
        ...

    def delete(self, group_id: int) -> bool:
        """Dissolve a group: it and its members are gone, its name free (its id is never
        used again); False if there was no such group."""
        ...

    def restore(self, group: Group) -> None:
        """Create the group, without members, with its own id (importing it); ids handed out
        later are above it. Raises NameTaken if its id or its name is in use."""
        ...

    def all(self, after_id: int, limit: int) -> list[Group]:
        """The groups with ids above after_id, ascending, at most limit of them."""
        ...

    def names(self) -> list[NamedId]:
        """Every group's id and name, and whether the name holds its key (for reports)."""
        ...


@frozen
class DeviceMark:
    """How far one device of a user has got: everything up to pos was delivered to it (with
    receipts: receipted); beyond holds the positions after pos it receipted out of order."""

    pos: int = 0
    beyond: frozenset[int] = frozenset()


class Inbox(Protocol):
    """Every delivery a user received or sent, each at its pos: 1, 2, 3, ... per user, with no
    gap and no reuse (PROTOCOL.md Version 2, "The inbox"). Positions are allocated inside the
    transaction that stores the entries, so a rolled-back transaction leaves no hole and a
    reader never sees pos N+1 before N exists.

    A delivery's conversation, for history, is derived from it: for a DirectMessage the other
    user (the user themself for a message to oneself), for a GroupMessage its group; a
    FriendAnswer belongs to no conversation. The message itself (its text) is kept once per
    msg_id however many inboxes hold it.
    """

    def append(self, entries: Sequence[tuple[int, Delivery]], now_ms: int) -> list[int]:
        """Put each (user_id, delivery) at that user's next pos, in the order given (a user
        named several times gets consecutive positions); return the pos of each entry. Meant
        for everything one loop turn accepted at once (group commit): an adapter does it in a
        few statements, not a round trip per entry. now_ms is when they were kept, for the
        history window. Raises UnknownUser if a user does not exist."""
        ...

    def last_pos(self, user_id: int) -> int:
        """The newest pos in user's inbox (0 if nothing was ever kept); never goes down, also
        when old entries are pruned."""
        ...

    def oldest_pos(self, user_id: int) -> int:
        """The oldest pos still kept; last_pos + 1 when nothing is kept."""
        ...

    def after(self, user_id: int, since: int, limit: int) -> list[Kept]:
        """The entries with pos > since, in pos order, at most limit of them."""
        ...

    def count_after(self, user_id: int, since: int) -> int:
        """How many entries with pos > since are kept."""
        ...

    def conversation(
        self,
        user_id: int,
        *,
        peer_id: int | None = None,
        group_id: int | None = None,
        before: int | None = None,
        limit: int,
    ) -> list[Kept]:
        """One conversation in user's inbox (exactly one of peer_id and group_id): the newest
        limit entries with pos < before (all when before is None), in pos order."""
        ...

    def read_pos(self, user_id: int) -> int:
        """The highest pos the user has said they read (0 if none)."""
        ...

    def set_read_pos(self, user_id: int, pos: int) -> bool:
        """Keep pos as read if it is higher than the kept one; True if it was."""
        ...

    def marks(self, user_id: int) -> dict[str, DeviceMark]:
        """The mark of every device the user has used."""
        ...

    def set_mark(self, user_id: int, device: str, mark: DeviceMark) -> None:
        """Remember how far device has got (creates the device on first use)."""
        ...

    def set_marks(self, marks: Mapping[tuple[int, str], DeviceMark]) -> None:
        """set_mark for every (user_id, device) in marks, in a few statements (a group
        commit's marks: not a round trip each). Raises UnknownUser, keeping none of them, if
        a user does not exist."""
        ...

    def prune(self, kept_before_ms: int, limit: int) -> int:
        """Delete at most limit entries (of any users) kept before kept_before_ms, with each
        such user's entries at lower positions (kept later only where two nodes' clocks
        disagree: what is kept stays a run up to last_pos, never a hole), and the messages no
        entry refers to any more; return how many entries went. Meant to be called in small
        batches, each its own short transaction."""
        ...

    def restore(
        self, user_id: int, kept: Sequence[Kept], last_pos: int, read_pos: int, now_ms: int
    ) -> None:
        """Fill user's empty inbox (importing it): each entry at its own pos (ascending), the
        newest pos last_pos and the read mark read_pos; messages already kept (another
        member's copy of a group message) are shared. Raises UnknownUser."""
        ...

    def prune_user(self, user_id: int, up_to_pos: int) -> int:
        """Delete user's entries with pos <= up_to_pos (the history window 0: what every
        device has had goes); return how many went."""
        ...


class FileRepository(Protocol):
    """Files shared in chats (PROTOCOL.md Version 2, "Files"): one row per upload, and which
    kept messages refer to it."""

    def add(self, owner_id: int, name: str, size: int, mime: str, now_ms: int) -> StoredFile:
        """A file about to be uploaded (no sha256 yet)."""
        ...

    def get(self, file_id: int) -> StoredFile | None: ...

    def complete(self, file_id: int, sha256: str) -> bool:
        """Its bytes are stored under sha256; False if there is no such file any more."""
        ...

    def uploaded_since(self, owner_id: int, since_ms: int) -> int:
        """Bytes of the files the owner asked to upload since since_ms (their quota)."""
        ...

    def refer(self, file_id: int, msg_id: int, group_id: int | None,
              recipient_id: int | None, now_ms: int) -> None:
        """Message msg_id carries the file, to a group or to one user."""
        ...

    def readers(self, file_id: int) -> tuple[frozenset[int], frozenset[int]]:
        """The users, and the groups, kept messages with the file went to."""
        ...

    def collect(self, referred_before_ms: int, unsent_before_ms: int) -> list[str]:
        """Forget references made before referred_before_ms whose message is no longer kept,
        then files no message refers to that were asked for before unsent_before_ms; return
        the sha256 of the bytes no file names any more (to be deleted from the store)."""
        ...


class MessageIdSequence(Protocol):
    def reserve(self, count: int) -> int:
        """Reserve count fresh message ids, never handed out before; return the first."""
        ...

    def advance_past(self, msg_id: int) -> None:
        """Hand out only ids above msg_id from now on (imported messages keep theirs)."""
        ...


@frozen
class WebhookRow:
    """One event waiting in the webhook outbox: its conversation (events of one conversation
    are delivered in id order), the JSON body to POST, and when it was written (ms)."""

    id: int
    conversation: str
    body: str
    created_ms: int


@frozen
class DeadWebhook:
    """An event the receiver kept refusing, set aside so that its conversation goes on (the
    dead letters: `chatserver admin webhooks dead`, `retry`, `drop`)."""

    id: int
    conversation: str
    body: str
    created_ms: int
    # When it was set aside (ms), and why ("refused 5 times (HTTP 400)", ...).
    died_ms: int
    reason: str


class WebhookOutbox(Protocol):
    """Events for the webhook, written in the transaction that keeps them, deleted once the
    receiver took them. Ids grow in the order of the commits of each conversation."""

    def add(self, rows: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Keep each (conversation, body), in order: a few statements, not one per row."""
        ...

    def pending(self, limit: int, excluding: Collection[str] = ()) -> list[WebhookRow]:
        """The oldest limit rows (by id) of every conversation except those excluded."""
        ...

    def delete(self, ids: Collection[int]) -> None: ...

    def stats(self) -> tuple[int, int | None]:
        """How many rows wait, and when the oldest was written (None: none waits)."""
        ...

    def take_lease(self, owner: str, now_ms: int, until_ms: int) -> bool:
        """Make owner the one node that delivers, until until_ms, if no other node holds a
        lease that lasts past now_ms (or owner holds it: renewed); True if owner holds it."""
        ...

    def bury(self, row: WebhookRow, now_ms: int, reason: str) -> None:
        """Move a waiting row to the dead letters (same id), with when and why."""
        ...

    def dead(self, limit: int, after_id: int = 0) -> list[DeadWebhook]:
        """The dead letters with ids above after_id, oldest first, at most limit."""
        ...

    def dead_count(self) -> int: ...

    def revive(self, ids: Collection[int] | None) -> int:
        """Put dead letters (all of them: None) back at the end of the outbox, as new rows of
        their conversations; how many."""
        ...

    def drop_dead(self, ids: Collection[int] | None) -> int:
        """Forget dead letters (all of them: None); how many."""
        ...


class Transaction(Protocol):
    """The repositories of one transaction."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def friends(self) -> FriendRepository: ...

    @property
    def groups(self) -> GroupRepository: ...

    @property
    def inbox(self) -> Inbox: ...

    @property
    def message_ids(self) -> MessageIdSequence: ...

    @property
    def webhooks(self) -> WebhookOutbox: ...

    @property
    def files(self) -> FileRepository: ...


class UnitOfWork(Protocol):
    async def run(self, work: Callable[[Transaction], T]) -> T:
        """Run work in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def aclose(self) -> None: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """True if password matches; takes as long for a missing hash as for a wrong one."""
        ...


class FileLinks(Protocol):
    """Signed, expiring paths on the web port for one file's upload or download."""

    def upload_url(self, file_id: int, expires_ms: int) -> str: ...

    def download_url(self, file_id: int, user_id: int, expires_ms: int) -> str: ...


class FileStore(Protocol):
    """Where files' bytes are kept, by their sha256."""

    async def delete(self, sha256: str) -> None:
        """Forget these bytes (nothing happens if they are not there)."""
        ...


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class Outbox(Protocol):
    """Where a session's events go: the connection that the transport owns."""

    def push(self, event: Event) -> bool:
        """Queue an event for the client; False if the client is too far behind to take it."""
        ...

    def after_flush(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run callback once everything queued so far has been written to the client."""
        ...

    def close(self, reason: str = "closed by the server") -> None:
        """End the connection (the transport then disconnects the session); reason is what
        the log and the session's end say."""
        ...


@frozen
class DeviceSession:
    """Where one device of a user is logged in, and since when (ms since the epoch)."""

    node_id: str
    started_ms: int


class Presence(Protocol):
    """Which nodes each online user's sessions are on (one per device), cluster-wide, and
    which nodes are alive."""

    async def claim(
        self, user_id: int, device: str, node_id: str, started_ms: int
    ) -> dict[str, DeviceSession]:
        """Mark user's device online on node_id; return the user's sessions on live nodes as
        they were before, by device (the device's own previous session included)."""
        ...

    async def release(self, user_id: int, device: str, node_id: str) -> bool:
        """Mark user's device offline, unless another node has claimed it since; True if the
        user still has a session on a live node."""
        ...

    async def locate(self, user_ids: Sequence[int]) -> dict[int, frozenset[str]]:
        """The live nodes with a session of each user in user_ids who is online."""
        ...

    async def sessions(self, user_id: int) -> dict[str, DeviceSession]:
        """The user's sessions on live nodes, by device."""
        ...

    async def live_nodes(self, node_ids: Collection[str]) -> set[str]:
        """Those of node_ids that are still alive (their lease is current)."""
        ...


class BusHandler(Protocol):
    """What a node does with what other nodes send it."""

    async def deliver(self, user_id: int, event: Event, origin: str) -> None:
        """Push an event to user's sessions here (a delivery comes as Kept, with its pos in
        the user's inbox, and is durable already); tell origin if the user is not here."""
        ...

    async def kick(self, user_id: int, device: str, reason: str | None = None) -> None:
        """End the session of user's device here: it logged in again, or one device too many,
        or (reason says) the account was suspended, deleted or its password changed."""
        ...

    async def forget_group(self, group_id: int) -> None:
        """The group's membership changed: drop any cached roster."""
        ...

    async def forget_user(self, user_id: int) -> None:
        """The user's account was deleted: nothing here may take it for a user any more."""
        ...

    async def forget_friend(self, user_id: int, friend_id: int) -> None:
        """user and friend are no longer friends."""
        ...

    async def blocked(self, user_id: int, by_id: int, blocked: bool) -> None:
        """by blocked user (or, blocked False, unblocked them)."""
        ...

    async def moved(self, user_id: int) -> None:
        """Where user's sessions are has changed: look them up afresh next time."""
        ...

    async def catch_up(self) -> None:
        """This node may have missed events (the bus was down): push to its sessions what
        their users' inboxes got meanwhile."""
        ...

    def cluster_size(self, nodes: int) -> None:
        """The cluster has this many nodes now, this one included: the rates a node keeps in
        memory for the whole cluster (strangers' messages per recipient, a group's inbox
        entries) are enforced here at their share, 1/nodes of each."""
        ...


class MessageBus(Protocol):
    """Carries events between the nodes of a cluster. At most once: what must not be lost is
    in the inbox before it is sent."""

    async def deliver(
        self,
        node_id: str,
        user_ids: Sequence[int],
        event: Event,
        positions: Sequence[int] | None = None,
    ) -> bool:
        """Hand event to node_id for users (one message, however many they are); with
        positions, a delivery at positions[i] in user_ids[i]'s inbox. False if that node was
        not listening."""
        ...

    async def kick(
        self, node_id: str, user_id: int, device: str, reason: str | None = None
    ) -> None:
        """End user's session of device on node_id, waiting a bounded time for it; reason,
        when given, is what its KICKED_MSG says."""
        ...

    async def forget_group(self, group_id: int) -> None:
        """Tell every node that the group's membership changed."""
        ...

    async def forget_friend(self, node_id: str, user_id: int, friend_id: int) -> None: ...

    async def forget_user(self, user_id: int) -> None:
        """Tell every node that the user's account was deleted, waiting a bounded time."""
        ...

    async def blocked(self, node_id: str, user_id: int, by_id: int, blocked: bool) -> None:
        """Tell node_id, where user has sessions, that by blocked (or unblocked) them."""
        ...

    async def moved(self, node_id: str, user_id: int) -> None:
        """Tell node_id that what it sent user came here, where user no longer is."""
        ...

    async def relocated(self, user_id: int) -> None:
        """Tell every node that user has a new session: where they are is to be looked up."""
        ...


class Metrics(Protocol):
    """Counts what the core does, for monitoring."""

    def routed(self, outcome: str, count: int = 1) -> None:
        """Deliveries routed: outcome is "kept" (an inbox entry written), "local" (pushed to a
        session here) or "cross-node" (handed to another node)."""
        ...

    def inbox_batch(self, entries: int) -> None:
        """How many inbox entries one group-commit transaction wrote."""
        ...

    def waiting_at_login(self, count: int) -> None:
        """How many stored deliveries a login found waiting."""
        ...
