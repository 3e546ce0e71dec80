"""In-memory repositories: the real thing, kept in dicts, for embedding and for tests.

Every change goes through an ``UndoLog`` so that a failed transaction can be undone exactly.
Orderings are kept as sequence numbers, not dict positions, so undoing a removal puts an entry
back where it was.
"""

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Literal, TypeVar

from attrs import Factory, define, evolve

from chatserver.adapters.inbox_keys import conversation_key, conversation_of
from chatserver.domain.errors import NameTaken, UnknownGroup, UnknownUser
from chatserver.domain.files import StoredFile
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import Delivery, DirectMessage, FriendAnswer, GroupMessage, Kept
from chatserver.domain.names import NamedId, name_key
from chatserver.domain.ports import DeadWebhook, DeviceMark, WebhookRow
from chatserver.domain.users import DELETED_USER_NAME, Account, User

K = TypeVar("K")
V = TypeVar("V")

Counter = Literal["user", "group", "message", "order", "webhook", "file"]


@define
class MemoryDatabase:
    """Everything the memory adapter keeps; each counter holds the last value handed out."""

    accounts: dict[int, Account] = Factory(dict)
    # Deleted accounts: still in accounts (what refers to their ids stays valid), never read.
    deleted: dict[int, None] = Factory(dict)
    user_ids_by_name: dict[str, int] = Factory(dict)
    # name_key (NFKC, case folded) -> the user or group holding it
    user_ids_by_key: dict[str, int] = Factory(dict)
    # user -> their friends (a dict used as a set, so that UndoLog.put and pop serve)
    friends: dict[int, dict[int, None]] = Factory(dict)
    # addressee -> requester -> order of the request
    requests: dict[int, dict[int, int]] = Factory(dict)
    # blocker -> the users they block; blocked -> the users who block them (dicts as sets)
    blocks: dict[int, dict[int, None]] = Factory(dict)
    blockers: dict[int, dict[int, None]] = Factory(dict)
    # (requester, addressee) -> when addressee last declined requester (ms)
    declines: dict[tuple[int, int], int] = Factory(dict)
    groups: dict[int, Group] = Factory(dict)
    group_ids_by_name: dict[str, int] = Factory(dict)
    group_ids_by_key: dict[str, int] = Factory(dict)
    # group -> user -> (order of joining, role, muted until in ms: 0 for not muted)
    members: dict[int, dict[int, tuple[int, Role, int]]] = Factory(dict)
    # user -> pos -> (kept_ms, delivery); a user's inbox, positions 1, 2, 3, ...
    inbox: dict[int, dict[int, tuple[int, Delivery]]] = Factory(dict)
    # user -> a pos at or below their oldest entry (pruning raises it), to find that fast
    inbox_floor: dict[int, int] = Factory(dict)
    # user -> the newest pos ever given them (never goes down, also when entries are pruned)
    last_pos: dict[int, int] = Factory(dict)
    read_pos: dict[int, int] = Factory(dict)
    # (user, conversation) -> the positions of its entries, ascending; pruned positions stay
    # in the list and are skipped on reading (an entry no longer in inbox)
    # (conversation: see adapters.inbox_keys)
    conversations: dict[tuple[int, int], list[int]] = Factory(dict)
    # user -> device -> mark
    marks: dict[int, dict[str, DeviceMark]] = Factory(dict)
    # webhook outbox: id -> (conversation, body, created_ms); the delivering node's lease
    webhooks: dict[int, tuple[str, str, int]] = Factory(dict)
    webhook_lease: dict[str, tuple[str, int]] = Factory(dict)
    webhook_dead: dict[int, DeadWebhook] = Factory(dict)
    counters: dict[Counter, int] = Factory(
        lambda: {"user": 0, "group": 0, "message": 0, "order": 0, "webhook": 0, "file": 0}
    )
    files: dict[int, StoredFile] = Factory(dict)
    # (file, msg_id) -> (group or None, recipient or None, when referred)
    file_refs: dict[tuple[int, int], tuple[int | None, int | None, int]] = Factory(dict)


_ABSENT = object()  # a key the mapping did not hold


class UndoLog:
    """Makes changes to a MemoryDatabase and remembers how to take each one back."""

    def __init__(self, database: MemoryDatabase) -> None:
        self.database = database
        # (mapping, key, the value before or _ABSENT), newest last
        self._undo: list[tuple[MutableMapping[Any, Any], Any, Any]] = []
        # Each counter's value before the transaction first advanced it: one entry to undo,
        # however often it is taken (a group message stored for 50 takes "order" 50 times).
        self._counters_before: dict[Counter, int] = {}

    def put(self, mapping: MutableMapping[K, V], key: K, value: V) -> None:
        self._undo.append((mapping, key, mapping.get(key, _ABSENT)))
        mapping[key] = value

    def pop(self, mapping: MutableMapping[K, V], key: K) -> bool:
        if key not in mapping:
            return False
        self._undo.append((mapping, key, mapping.pop(key)))
        return True

    def extend(self, items: list[V], more: Iterable[V]) -> None:
        """Append to a list; undone by cutting it back to its length before."""
        # Undone through the same tuple as a mapping change: items[slice] = [] cuts the list.
        self._undo.append((items, slice(len(items), None), []))  # type: ignore[arg-type]
        items.extend(more)

    def drop_front(self, items: list[V], count: int) -> None:
        """Remove a list's first count items; undone by putting them back in front."""
        if count <= 0:
            return
        self._undo.append((items, slice(0, 0), items[:count]))  # type: ignore[arg-type]
        del items[:count]

    def take(self, counter: Counter, count: int = 1) -> int:
        """Advance a counter by count; return the first of the values taken."""
        counters = self.database.counters
        last = counters[counter]
        if counter not in self._counters_before:
            self._counters_before[counter] = last
        counters[counter] = last + count
        return last + 1

    def undo(self) -> None:
        while self._undo:
            mapping, key, before = self._undo.pop()
            if before is _ABSENT:
                mapping.pop(key, None)
            else:
                mapping[key] = before
        self.database.counters.update(self._counters_before)
        self._counters_before.clear()


class MemoryUserRepository:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def name_in_use(self, name: str) -> bool:
        return name in self._db.user_ids_by_name or name_key(name) in self._db.user_ids_by_key

    def add(self, name: str, password_hash: str) -> User:
        key = name_key(name)
        if self.name_in_use(name):
            raise NameTaken()
        user = User(self._log.take("user"), name)
        self._log.put(self._db.accounts, user.id, Account(user, password_hash))
        self._log.put(self._db.user_ids_by_name, name, user.id)
        self._log.put(self._db.user_ids_by_key, key, user.id)
        return user

    def get(self, user_id: int) -> User | None:
        account = self.account(user_id)
        return account.user if account else None

    def account(self, user_id: int) -> Account | None:
        if user_id in self._db.deleted:
            return None
        return self._db.accounts.get(user_id)

    def account_by_name(self, name: str) -> Account | None:
        user_id = self._db.user_ids_by_name.get(name)
        return None if user_id is None else self._db.accounts[user_id]

    def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        account = self._db.accounts.get(user_id)
        if account is None:
            return False
        self._log.put(self._db.accounts, user_id, evolve(account, password_hash=password_hash))
        return True

    def names(self) -> list[NamedId]:
        keyed = set(self._db.user_ids_by_key.values())
        return [
            NamedId(user_id, account.user.name, user_id in keyed)
            for user_id, account in sorted(self._db.accounts.items())
            if user_id not in self._db.deleted
        ]

    def set_suspended(self, user_id: int, until_ms: int | None) -> bool:
        account = self.account(user_id)
        if account is None:
            return False
        self._log.put(self._db.accounts, user_id, evolve(account, suspended_until_ms=until_ms))
        return True

    def accounts(self, after_id: int, limit: int) -> list[Account]:
        db = self._db
        ids = sorted(i for i in db.accounts if i > after_id and i not in db.deleted)
        return [db.accounts[i] for i in ids[:limit]]

    def restore(self, account: Account) -> None:
        user = account.user
        if user.id in self._db.accounts or user.name in self._db.user_ids_by_name:
            raise NameTaken()
        if name_key(user.name) in self._db.user_ids_by_key:
            raise NameTaken()
        self._log.put(self._db.accounts, user.id, account)
        self._log.put(self._db.user_ids_by_name, user.name, user.id)
        self._log.put(self._db.user_ids_by_key, name_key(user.name), user.id)
        _advance(self._log, "user", user.id)

    def delete(self, user_id: int) -> bool:
        db, log = self._db, self._log
        account = self.account(user_id)
        if account is None:
            return False
        log.put(db.deleted, user_id, None)
        log.pop(db.user_ids_by_name, account.user.name)
        if db.user_ids_by_key.get(name_key(account.user.name)) == user_id:
            log.pop(db.user_ids_by_key, name_key(account.user.name))
        for other in list(db.friends.get(user_id, ())):
            log.pop(db.friends[other], user_id)
        log.pop(db.friends, user_id)
        for waiting in db.requests.values():
            log.pop(waiting, user_id)
        log.pop(db.requests, user_id)
        for mine, theirs in ((db.blocks, db.blockers), (db.blockers, db.blocks)):
            for other in list(mine.get(user_id, ())):
                log.pop(theirs[other], user_id)
            log.pop(mine, user_id)
        for pair in [pair for pair in db.declines if user_id in pair]:
            log.pop(db.declines, pair)
        for members in db.members.values():
            log.pop(members, user_id)
        log.pop(db.inbox, user_id)
        log.pop(db.inbox_floor, user_id)
        log.pop(db.read_pos, user_id)
        log.pop(db.marks, user_id)
        for key in [key for key in db.conversations if key[0] == user_id]:
            log.pop(db.conversations, key)
        for entries in db.inbox.values():
            for pos, (kept_ms, delivery) in list(entries.items()):
                renamed = _without_sender_name(delivery, user_id)
                if renamed is not None:
                    log.put(entries, pos, (kept_ms, renamed))
        return True


def _advance(log: UndoLog, counter: Counter, used: int) -> None:
    """The counter hands out values above used from now on."""
    behind = used - log.database.counters[counter]
    if behind > 0:
        log.take(counter, behind)


def _without_sender_name(delivery: Delivery, user_id: int) -> Delivery | None:
    """The delivery with DELETED_USER_NAME for user_id as its sender; None if not theirs."""
    if isinstance(delivery, DirectMessage | GroupMessage) and delivery.sender_id == user_id:
        return evolve(delivery, sender_name=DELETED_USER_NAME)
    if isinstance(delivery, FriendAnswer) and delivery.responder_id == user_id:
        return evolve(delivery, responder_name=DELETED_USER_NAME)
    return None


def _require_users(db: MemoryDatabase, *user_ids: int) -> None:
    accounts = db.accounts
    for user_id in user_ids:
        if user_id not in accounts:
            raise UnknownUser()


class MemoryFriendRepository:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def friends_of(self, user_id: int) -> list[User]:
        return [self._db.accounts[i].user for i in sorted(self._db.friends.get(user_id, ()))]

    def are_friends(self, a: int, b: int) -> bool:
        return b in self._db.friends.get(a, ())

    def befriend(self, a: int, b: int) -> None:
        _require_users(self._db, a, b)
        self._log.put(self._db.friends.setdefault(a, {}), b, None)
        self._log.put(self._db.friends.setdefault(b, {}), a, None)

    def unfriend(self, a: int, b: int) -> None:
        self._log.pop(self._db.friends.get(a, {}), b)
        self._log.pop(self._db.friends.get(b, {}), a)

    def add_request(self, requester_id: int, addressee_id: int) -> None:
        _require_users(self._db, requester_id, addressee_id)
        if not self.has_request(requester_id, addressee_id):
            waiting = self._db.requests.setdefault(addressee_id, {})
            self._log.put(waiting, requester_id, self._log.take("order"))

    def has_request(self, requester_id: int, addressee_id: int) -> bool:
        return requester_id in self._db.requests.get(addressee_id, {})

    def remove_request(self, requester_id: int, addressee_id: int) -> bool:
        return self._log.pop(self._db.requests.get(addressee_id, {}), requester_id)

    def requesters_of(self, addressee_id: int) -> list[User]:
        waiting = self._db.requests.get(addressee_id, {})
        return [self._db.accounts[i].user for i in sorted(waiting, key=waiting.__getitem__)]

    def requested_by(self, requester_id: int) -> list[int]:
        return sorted(a for a, waiting in self._db.requests.items() if requester_id in waiting)

    def block(self, blocker_id: int, blocked_id: int) -> bool:
        _require_users(self._db, blocker_id, blocked_id)
        if self.is_blocked(blocker_id, blocked_id):
            return False
        self._log.put(self._db.blocks.setdefault(blocker_id, {}), blocked_id, None)
        self._log.put(self._db.blockers.setdefault(blocked_id, {}), blocker_id, None)
        return True

    def unblock(self, blocker_id: int, blocked_id: int) -> bool:
        self._log.pop(self._db.blockers.get(blocked_id, {}), blocker_id)
        return self._log.pop(self._db.blocks.get(blocker_id, {}), blocked_id)

    def is_blocked(self, blocker_id: int, blocked_id: int) -> bool:
        return blocked_id in self._db.blocks.get(blocker_id, ())

    def blocked_by(self, blocker_id: int) -> list[int]:
        return sorted(self._db.blocks.get(blocker_id, ()))

    def blockers_of(self, blocked_id: int) -> list[int]:
        return sorted(self._db.blockers.get(blocked_id, ()))

    def declined_at(self, requester_id: int, addressee_id: int) -> int | None:
        return self._db.declines.get((requester_id, addressee_id))

    def note_decline(
        self, requester_id: int, addressee_id: int, at_ms: int, *, forget_before_ms: int
    ) -> None:
        declines = self._db.declines
        for pair in [pair for pair, when in declines.items() if when < forget_before_ms]:
            self._log.pop(declines, pair)
        self._log.put(declines, (requester_id, addressee_id), at_ms)

    def declines_of(self, user_id: int) -> list[tuple[int, int, int]]:
        return sorted(
            (requester, addressee, when)
            for (requester, addressee), when in self._db.declines.items()
            if user_id in (requester, addressee)
        )

    def forget_declines(self, a: int, b: int) -> None:
        self._log.pop(self._db.declines, (a, b))
        self._log.pop(self._db.declines, (b, a))


class MemoryGroupRepository:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def create(self, name: str, description: str, creator_id: int) -> Group:
        _require_users(self._db, creator_id)
        key = name_key(name)
        if name in self._db.group_ids_by_name or key in self._db.group_ids_by_key:
            raise NameTaken()
        group = Group(self._log.take("group"), name, description)
        self._log.put(self._db.groups, group.id, group)
        self._log.put(self._db.group_ids_by_name, name, group.id)
        self._log.put(self._db.group_ids_by_key, key, group.id)
        self.add_member(group.id, creator_id, Role.CREATOR)
        return group

    def get(self, group_id: int) -> Group | None:
        return self._db.groups.get(group_id)

    def add_member(self, group_id: int, user_id: int, role: Role) -> bool:
        if group_id not in self._db.groups:
            raise UnknownGroup()
        _require_users(self._db, user_id)
        members = self._db.members.setdefault(group_id, {})
        if user_id in members:
            return False
        self._log.put(members, user_id, (self._log.take("order"), role, 0))
        return True

    def remove_member(self, group_id: int, user_id: int) -> bool:
        return self._log.pop(self._db.members.get(group_id, {}), user_id)

    def members(self, group_id: int) -> list[Member]:
        members = sorted(self._db.members.get(group_id, {}).items(), key=lambda item: item[1])
        return [Member(self._db.accounts[i].user, role, muted) for i, (_, role, muted) in members]

    def set_role(self, group_id: int, user_id: int, role: Role) -> bool:
        members = self._db.members.get(group_id, {})
        if user_id not in members:
            return False
        order, _, muted = members[user_id]
        self._log.put(members, user_id, (order, role, muted))
        return True

    def set_muted(self, group_id: int, user_id: int, until_ms: int) -> bool:
        members = self._db.members.get(group_id, {})
        if user_id not in members:
            return False
        order, role, _ = members[user_id]
        self._log.put(members, user_id, (order, role, until_ms))
        return True

    def update(self, group_id: int, name: str | None, description: str | None) -> Group:
        group = self._db.groups.get(group_id)
        if group is None:
            raise UnknownGroup()
        names, keys = self._db.group_ids_by_name, self._db.group_ids_by_key
        if name is not None and name != group.name:
            key = name_key(name)
            if name in names or keys.get(key, group_id) != group_id:
                raise NameTaken()
            self._log.pop(names, group.name)
            self._log.pop(keys, name_key(group.name))
            self._log.put(names, name, group_id)
            self._log.put(keys, key, group_id)
        changed = Group(
            group_id,
            group.name if name is None else name,
            group.description if description is None else description,
        )
        self._log.put(self._db.groups, group_id, changed)
        return changed

    def delete(self, group_id: int) -> bool:
        group = self._db.groups.get(group_id)
        if group is None:
            return False
        self._log.pop(self._db.members, group_id)
        self._log.pop(self._db.group_ids_by_name, group.name)
        if self._db.group_ids_by_key.get(name_key(group.name)) == group_id:
            self._log.pop(self._db.group_ids_by_key, name_key(group.name))
        self._log.pop(self._db.groups, group_id)
        return True

    def restore(self, group: Group) -> None:
        key = name_key(group.name)
        if group.id in self._db.groups or group.name in self._db.group_ids_by_name:
            raise NameTaken()
        if key in self._db.group_ids_by_key:
            raise NameTaken()
        self._log.put(self._db.groups, group.id, group)
        self._log.put(self._db.group_ids_by_name, group.name, group.id)
        self._log.put(self._db.group_ids_by_key, key, group.id)
        _advance(self._log, "group", group.id)

    def all(self, after_id: int, limit: int) -> list[Group]:
        ids = sorted(i for i in self._db.groups if i > after_id)
        return [self._db.groups[i] for i in ids[:limit]]

    def names(self) -> list[NamedId]:
        keyed = set(self._db.group_ids_by_key.values())
        return [
            NamedId(group_id, group.name, group_id in keyed)
            for group_id, group in sorted(self._db.groups.items())
        ]

    def groups_of(self, user_id: int) -> list[Group]:
        return [
            self._db.groups[group_id]
            for group_id, members in sorted(self._db.members.items())
            if user_id in members
        ]


class MemoryMessageIdSequence:
    def __init__(self, log: UndoLog) -> None:
        self._log = log

    def reserve(self, count: int) -> int:
        if count < 0:
            raise ValueError("cannot reserve a negative number of message ids")
        return self._log.take("message", count)

    def advance_past(self, msg_id: int) -> None:
        _advance(self._log, "message", msg_id)


class MemoryWebhookOutbox:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def add(self, rows: Sequence[tuple[str, str]], now_ms: int) -> None:
        for conversation, body in rows:
            self._log.put(
                self._db.webhooks, self._log.take("webhook"), (conversation, body, now_ms)
            )

    def pending(self, limit: int, excluding: Collection[str] = ()) -> list[WebhookRow]:
        skipped = set(excluding)
        found: list[WebhookRow] = []
        for row_id in sorted(self._db.webhooks):
            if len(found) >= limit:
                break
            conversation, body, created_ms = self._db.webhooks[row_id]
            if conversation not in skipped:
                found.append(WebhookRow(row_id, conversation, body, created_ms))
        return found

    def delete(self, ids: Collection[int]) -> None:
        for row_id in ids:
            self._log.pop(self._db.webhooks, row_id)

    def stats(self) -> tuple[int, int | None]:
        rows = self._db.webhooks
        if not rows:
            return 0, None
        return len(rows), min(created_ms for _, _, created_ms in rows.values())

    def take_lease(self, owner: str, now_ms: int, until_ms: int) -> bool:
        holder = self._db.webhook_lease.get("deliver")
        if holder is not None and holder[0] != owner and holder[1] > now_ms:
            return False
        self._log.put(self._db.webhook_lease, "deliver", (owner, until_ms))
        return True

    def bury(self, row: WebhookRow, now_ms: int, reason: str) -> None:
        self._log.pop(self._db.webhooks, row.id)
        dead = DeadWebhook(row.id, row.conversation, row.body, row.created_ms, now_ms, reason)
        self._log.put(self._db.webhook_dead, row.id, dead)

    def dead(self, limit: int, after_id: int = 0) -> list[DeadWebhook]:
        found = sorted(i for i in self._db.webhook_dead if i > after_id)[:limit]
        return [self._db.webhook_dead[i] for i in found]

    def dead_count(self) -> int:
        return len(self._db.webhook_dead)

    def revive(self, ids: Collection[int] | None) -> int:
        chosen = self._chosen(ids)
        for dead in chosen:
            self._log.pop(self._db.webhook_dead, dead.id)
            row = (dead.conversation, dead.body, dead.created_ms)
            self._log.put(self._db.webhooks, self._log.take("webhook"), row)
        return len(chosen)

    def drop_dead(self, ids: Collection[int] | None) -> int:
        chosen = self._chosen(ids)
        for dead in chosen:
            self._log.pop(self._db.webhook_dead, dead.id)
        return len(chosen)

    def _chosen(self, ids: Collection[int] | None) -> list[DeadWebhook]:
        everything = self._db.webhook_dead
        wanted = sorted(everything) if ids is None else sorted(set(ids) & everything.keys())
        return [everything[i] for i in wanted]


class MemoryInbox:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def append(self, entries: Sequence[tuple[int, Delivery]], now_ms: int) -> list[int]:
        db = self._db
        log = self._log
        _require_users(db, *{user_id for user_id, _ in entries})
        positions: list[int] = []
        new_last: dict[int, int] = {}
        added: dict[tuple[int, int], list[int]] = {}
        for user_id, delivery in entries:
            pos = new_last.get(user_id)
            pos = (db.last_pos.get(user_id, 0) if pos is None else pos) + 1
            new_last[user_id] = pos
            positions.append(pos)
            log.put(db.inbox.setdefault(user_id, {}), pos, (now_ms, delivery))
            key = conversation_of(user_id, delivery)
            if key is not None:
                added.setdefault((user_id, key), []).append(pos)
        for user_id, pos in new_last.items():
            log.put(db.last_pos, user_id, pos)
        for conversation, more in added.items():
            if conversation not in db.conversations:
                log.put(db.conversations, conversation, [])
            log.extend(db.conversations[conversation], more)
        return positions

    def last_pos(self, user_id: int) -> int:
        return self._db.last_pos.get(user_id, 0)

    def oldest_pos(self, user_id: int) -> int:
        entries = self._db.inbox.get(user_id)
        last = self.last_pos(user_id)
        if not entries:
            return last + 1
        pos = self._db.inbox_floor.get(user_id, 1)
        while pos not in entries:  # the floor is at or below the oldest entry
            pos += 1
        return pos

    def after(self, user_id: int, since: int, limit: int) -> list[Kept]:
        entries = self._db.inbox.get(user_id)
        if not entries or limit <= 0:
            return []
        last = self.last_pos(user_id)
        pos = max(since + 1, self.oldest_pos(user_id))
        found: list[Kept] = []
        while pos <= last and len(found) < limit:
            entry = entries.get(pos)
            if entry is not None:
                found.append(Kept(pos, entry[1]))
            pos += 1
        return found

    def count_after(self, user_id: int, since: int) -> int:
        entries = self._db.inbox.get(user_id)
        if not entries:
            return 0
        oldest = self.oldest_pos(user_id)
        last = self.last_pos(user_id)
        if len(entries) == last - oldest + 1:  # no hole: count by arithmetic
            return max(0, last - max(since, oldest - 1))
        return sum(1 for pos in entries if pos > since)

    def conversation(
        self,
        user_id: int,
        *,
        peer_id: int | None = None,
        group_id: int | None = None,
        before: int | None = None,
        limit: int,
    ) -> list[Kept]:
        key = conversation_key(peer_id, group_id)
        positions = self._db.conversations.get((user_id, key), [])
        entries = self._db.inbox.get(user_id, {})
        end = len(positions) if before is None else bisect_left(positions, before)
        found: list[Kept] = []
        for index in range(end - 1, -1, -1):
            if len(found) >= limit:
                break
            pos = positions[index]
            entry = entries.get(pos)
            if entry is not None:
                found.append(Kept(pos, entry[1]))
        found.reverse()
        return found

    def read_pos(self, user_id: int) -> int:
        return self._db.read_pos.get(user_id, 0)

    def set_read_pos(self, user_id: int, pos: int) -> bool:
        if pos <= self.read_pos(user_id):
            return False
        _require_users(self._db, user_id)
        self._log.put(self._db.read_pos, user_id, pos)
        return True

    def marks(self, user_id: int) -> dict[str, DeviceMark]:
        return dict(self._db.marks.get(user_id, {}))

    def set_mark(self, user_id: int, device: str, mark: DeviceMark) -> None:
        _require_users(self._db, user_id)
        if user_id not in self._db.marks:
            self._log.put(self._db.marks, user_id, {})
        self._log.put(self._db.marks[user_id], device, mark)

    def set_marks(self, marks: Mapping[tuple[int, str], DeviceMark]) -> None:
        _require_users(self._db, *{user_id for user_id, _ in marks})
        for (user_id, device), mark in marks.items():
            self.set_mark(user_id, device, mark)

    def prune(self, kept_before_ms: int, limit: int) -> int:
        # Each user's oldest entries first, up to the first one kept since: a batch costs the
        # users and the entries that go, not the whole store. (An entry kept before an older
        # one of the same user, if the clock went back, waits for that one to go first.)
        db = self._db
        pruned = 0
        for user_id, entries in db.inbox.items():
            if pruned >= limit:
                break
            if not entries:
                continue
            pos = start = self.oldest_pos(user_id)
            last = db.last_pos.get(user_id, 0)
            touched: set[int] = set()
            while pos <= last and pruned < limit:
                entry = entries.get(pos)
                if entry is not None:
                    if entry[0] >= kept_before_ms:
                        break
                    self._log.pop(entries, pos)
                    pruned += 1
                    key = conversation_of(user_id, entry[1])
                    if key is not None:
                        touched.add(key)
                pos += 1
            if pos != start:
                self._log.put(db.inbox_floor, user_id, pos)
                self._forget_positions(user_id, touched, pos)
        return pruned

    def restore(
        self, user_id: int, kept: Sequence[Kept], last_pos: int, read_pos: int, now_ms: int
    ) -> None:
        db, log = self._db, self._log
        _require_users(db, user_id)
        entries = db.inbox.setdefault(user_id, {})
        for k in kept:
            log.put(entries, k.pos, (now_ms, k.delivery))
            key = conversation_of(user_id, k.delivery)
            if key is not None:
                if (user_id, key) not in db.conversations:
                    log.put(db.conversations, (user_id, key), [])
                log.extend(db.conversations[(user_id, key)], [k.pos])
        if kept:
            log.put(db.inbox_floor, user_id, kept[0].pos)
        log.put(db.last_pos, user_id, last_pos)
        log.put(db.read_pos, user_id, read_pos)

    def prune_user(self, user_id: int, up_to_pos: int) -> int:
        entries = self._db.inbox.get(user_id, {})
        pruned = 0
        touched: set[int] = set()
        up_to_pos = min(up_to_pos, self.last_pos(user_id))  # the floor never passes last_pos + 1
        for pos in range(self.oldest_pos(user_id), up_to_pos + 1):
            entry = entries.get(pos)
            if entry is not None:
                self._log.pop(entries, pos)
                pruned += 1
                key = conversation_of(user_id, entry[1])
                if key is not None:
                    touched.add(key)
        if up_to_pos >= self._db.inbox_floor.get(user_id, 1):
            self._log.put(self._db.inbox_floor, user_id, up_to_pos + 1)
            self._forget_positions(user_id, touched, up_to_pos + 1)
        return pruned

    def _forget_positions(self, user_id: int, conversations: Iterable[int], floor: int) -> None:
        """Drop the positions below floor (pruned) from these conversations of user."""
        for key in conversations:
            positions = self._db.conversations.get((user_id, key))
            if positions:
                self._log.drop_front(positions, bisect_left(positions, floor))


class MemoryFileRepository:
    def __init__(self, log: UndoLog) -> None:
        self._log = log
        self._db = log.database

    def add(self, owner_id: int, name: str, size: int, mime: str, now_ms: int) -> StoredFile:
        stored = StoredFile(self._log.take("file"), owner_id, name, size, mime, now_ms)
        self._log.put(self._db.files, stored.id, stored)
        return stored

    def get(self, file_id: int) -> StoredFile | None:
        return self._db.files.get(file_id)

    def complete(self, file_id: int, sha256: str) -> bool:
        stored = self._db.files.get(file_id)
        if stored is None:
            return False
        self._log.put(self._db.files, file_id, evolve(stored, sha256=sha256))
        return True

    def uploaded_since(self, owner_id: int, since_ms: int) -> int:
        return sum(f.size for f in self._db.files.values()
                   if f.owner_id == owner_id and f.created_ms >= since_ms)

    def refer(self, file_id: int, msg_id: int, group_id: int | None,
              recipient_id: int | None, now_ms: int) -> None:
        self._log.put(self._db.file_refs, (file_id, msg_id), (group_id, recipient_id, now_ms))

    def readers(self, file_id: int) -> tuple[frozenset[int], frozenset[int]]:
        refs = [v for (f, _), v in self._db.file_refs.items() if f == file_id]
        return (frozenset(u for _, u, _ in refs if u is not None),
                frozenset(g for g, _, _ in refs if g is not None))

    def collect(self, referred_before_ms: int, unsent_before_ms: int) -> list[str]:
        db = self._db
        kept = {d.msg_id for entries in db.inbox.values() for _, d in entries.values()}
        for key, (_, _, referred_ms) in list(db.file_refs.items()):
            if referred_ms < referred_before_ms and key[1] not in kept:
                self._log.pop(db.file_refs, key)
        referred = {file_id for file_id, _ in db.file_refs}
        gone = [f for f in db.files.values()
                if f.created_ms < unsent_before_ms and f.id not in referred]
        for stored in gone:
            self._log.pop(db.files, stored.id)
        named = {f.sha256 for f in db.files.values()}
        return sorted({f.sha256 for f in gone if f.sha256 is not None} - named)
