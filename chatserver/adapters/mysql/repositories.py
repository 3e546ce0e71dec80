"""MySQL repositories: plain synchronous SQL on one cursor, run by the unit of work.

Every value travels as a parameter (%s); only placeholders are ever built into SQL text.
"""

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any, cast

import attrs
import orjson
from mysql.connector import IntegrityError, errorcode
from mysql.connector.cursor import MySQLCursor

from chatserver.adapters import serialization
from chatserver.adapters.group_rows import SqlGroupRows
from chatserver.adapters.inbox_keys import conversation_key, conversation_of, place
from chatserver.adapters.sql_dialect import Dialect
from chatserver.adapters.webhook_rows import SqlDeadLetters
from chatserver.domain.errors import ChatError, NameTaken, UnknownUser
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import (
    Delivery,
    DirectMessage,
    FriendAnswer,
    GroupEvent,
    GroupMessage,
    Kept,
)
from chatserver.domain.names import NamedId, name_key
from chatserver.domain.ports import DeviceMark, WebhookRow
from chatserver.domain.users import DELETED_USER_NAME, Account, User

# The adapter's private format for waiting deliveries: a kind, and the fields as JSON.
DELIVERY_KINDS: dict[str, type[Delivery]] = {
    "direct": DirectMessage,
    "group": GroupMessage,
    "friend_answer": FriendAnswer,
    "group_event": GroupEvent,
}
KIND_OF_DELIVERY = {cls: kind for kind, cls in DELIVERY_KINDS.items()}

FOREIGN_KEY_ERRORS = (errorcode.ER_NO_REFERENCED_ROW_2, errorcode.ER_NO_REFERENCED_ROW)


def dump_delivery(delivery: Delivery) -> tuple[str, str]:
    return KIND_OF_DELIVERY[type(delivery)], orjson.dumps(attrs.asdict(delivery)).decode()


def load_delivery(kind: str, body: str) -> Delivery:
    # The shared reader: it makes a chat's attached file a FileRef again.
    return serialization.load_delivery(kind, body)


@contextmanager
def constraints_as(
    *, unique: type[ChatError] | None = None, foreign_key: type[ChatError] | None = None
) -> Iterator[None]:
    """Turn a broken UNIQUE or FOREIGN KEY constraint into the domain error that explains it.

    MySQL undoes only the failed statement, so the transaction goes on after such an error.
    """
    try:
        yield
    except IntegrityError as error:
        if unique and error.errno == errorcode.ER_DUP_ENTRY:
            raise unique() from error
        if foreign_key and error.errno in FOREIGN_KEY_ERRORS:
            raise foreign_key() from error
        raise


# What MySQL says its own way, for the statements written once for both databases. Not
# INSERT IGNORE to keep a row that exists: that would also swallow the foreign key errors.
MYSQL = Dialect(
    placeholder="%s",
    keep_existing=" ON DUPLICATE KEY UPDATE {column} = {column}",
    update_existing=" ON DUPLICATE KEY UPDATE {column} = VALUES({column})",
    constraints_as=constraints_as,
)


def insert_with_next_id(
    cursor: MySQLCursor, table: str, insert: str, values: tuple[str, ...]
) -> int:
    """Run insert with the table's next id before values; the id is used up only if it succeeds.

    Locking the sequence row makes concurrent inserts into the table take turns.
    """
    cursor.execute("SELECT next FROM id_sequence WHERE tablename = %s FOR UPDATE", (table,))
    new_id = _single(cursor)
    cursor.execute(insert, (new_id, *values))
    cursor.execute("UPDATE id_sequence SET next = next + 1 WHERE tablename = %s", (table,))
    return new_id


def follow_id_sequence(cursor: MySQLCursor, table: str, used_id: int) -> None:
    """New rows of table get ids after used_id (a row imported with its own id)."""
    cursor.execute(
        "UPDATE id_sequence SET next = GREATEST(next, %s) WHERE tablename = %s",
        (used_id + 1, table),
    )


def _rows(cursor: MySQLCursor) -> list[tuple[Any, ...]]:
    """The cursor's rows, typed loosely: the driver's own annotations change between releases
    (a type: ignore that fits one release is an error under the next)."""
    return cast(list[tuple[Any, ...]], cursor.fetchall())


def _row(cursor: MySQLCursor) -> tuple[Any, ...] | None:
    return cast(tuple[Any, ...] | None, cursor.fetchone())


def _single(cursor: MySQLCursor) -> int:
    row = _row(cursor)
    assert row is not None
    return int(row[0])


def _users(cursor: MySQLCursor) -> list[User]:
    return [User(int(user_id), str(name)) for user_id, name in _rows(cursor)]


class MySqlUserRepository:
    def __init__(self, cursor: MySQLCursor) -> None:
        self._db = cursor

    def add(self, name: str, password_hash: str) -> User:
        with constraints_as(unique=NameTaken):
            user_id = insert_with_next_id(
                self._db,
                "user",
                "INSERT INTO user (id, name, password) VALUES (%s, %s, %s)",
                (name, password_hash),
            )
            self._db.execute(
                "INSERT INTO user_name_key (name_key, userid) VALUES (%s, %s)",
                (name_key(name), user_id),
            )
        return User(user_id, name)

    def get(self, user_id: int) -> User | None:
        self._db.execute("SELECT id, name FROM user WHERE id = %s AND deleted = 0", (user_id,))
        users = _users(self._db)
        return users[0] if users else None

    def account(self, user_id: int) -> Account | None:
        self._db.execute(f"{_ACCOUNT} WHERE id = %s AND deleted = 0", (user_id,))
        return self._account()

    def account_by_name(self, name: str) -> Account | None:
        self._db.execute(f"{_ACCOUNT} WHERE name = %s AND deleted = 0", (name,))
        return self._account()

    def name_in_use(self, name: str) -> bool:
        self._db.execute(
            "SELECT 1 FROM user WHERE name = %s AND deleted = 0"
            " UNION ALL SELECT 1 FROM user_name_key WHERE name_key = %s LIMIT 1",
            (name, name_key(name)),
        )
        return bool(self._db.fetchall())

    def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        return self._set(user_id, "password = %s", password_hash)

    def set_suspended(self, user_id: int, until_ms: int | None) -> bool:
        return self._set(user_id, "suspended_until = %s", until_ms)

    def _set(self, user_id: int, assignment: str, value: str | int | None) -> bool:
        # Read first: an UPDATE that changes nothing counts no row on MySQL.
        self._db.execute("SELECT 1 FROM user WHERE id = %s AND deleted = 0 FOR UPDATE", (user_id,))
        if self._db.fetchone() is None:
            return False
        self._db.execute(f"UPDATE user SET {assignment} WHERE id = %s", (value, user_id))
        return True

    def accounts(self, after_id: int, limit: int) -> list[Account]:
        self._db.execute(
            f"{_ACCOUNT} WHERE id > %s AND deleted = 0 ORDER BY id LIMIT %s", (after_id, limit)
        )
        return [_to_account(row) for row in _rows(self._db)]

    def restore(self, account: Account) -> None:
        user = account.user
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO user (id, name, password, suspended_until) VALUES (%s, %s, %s, %s)",
                (user.id, user.name, account.password_hash, account.suspended_until_ms),
            )
            self._db.execute(
                "INSERT INTO user_name_key (name_key, userid) VALUES (%s, %s)",
                (name_key(user.name), user.id),
            )
        follow_id_sequence(self._db, "user", user.id)

    def delete(self, user_id: int) -> bool:
        db = self._db
        db.execute("SELECT 1 FROM user WHERE id = %s AND deleted = 0 FOR UPDATE", (user_id,))
        if db.fetchone() is None:
            return False
        db.execute(
            "UPDATE user SET deleted = 1, name = %s, password = '!deleted',"
            " suspended_until = NULL WHERE id = %s",
            (DELETED_ROW_NAME.format(user_id), user_id),
        )
        db.execute("DELETE FROM user_name_key WHERE userid = %s", (user_id,))
        for statement in (
            "DELETE FROM friend WHERE userid = %s OR friendid = %s",
            "DELETE FROM friend_request WHERE requester = %s OR addressee = %s",
            "DELETE FROM userblock WHERE blocker = %s OR blocked = %s",
            "DELETE FROM friend_decline WHERE requester = %s OR addressee = %s",
        ):
            db.execute(statement, (user_id, user_id))
        db.execute("DELETE FROM groupuser WHERE userid = %s", (user_id,))
        db.execute("DELETE FROM inbox_device WHERE userid = %s", (user_id,))
        db.execute("SELECT DISTINCT msg_id FROM inbox WHERE userid = %s", (user_id,))
        msg_ids = [(int(row[0]),) for row in _rows(db)]
        db.execute("DELETE FROM inbox WHERE userid = %s", (user_id,))
        db.execute("UPDATE inbox_head SET read_pos = 0 WHERE userid = %s", (user_id,))
        if msg_ids:
            db.executemany(
                "DELETE FROM inbox_message WHERE msg_id = %s AND NOT EXISTS"
                " (SELECT 1 FROM inbox WHERE inbox.msg_id = inbox_message.msg_id)",
                msg_ids,
            )
        for field, kinds, sender in (
            ("$.sender_name", "kind IN ('direct', 'group')", "$.sender_id"),
            ("$.responder_name", "kind = 'friend_answer'", "$.responder_id"),
        ):
            db.execute(
                f"UPDATE inbox_message SET body = JSON_SET(body, '{field}', %s)"
                f" WHERE {kinds} AND JSON_EXTRACT(body, '{sender}') = %s",
                (DELETED_USER_NAME, user_id),
            )
        return True

    def names(self) -> list[NamedId]:
        self._db.execute(
            "SELECT u.id, u.name, k.name_key IS NOT NULL FROM user u"
            " LEFT JOIN user_name_key k ON k.userid = u.id WHERE u.deleted = 0 ORDER BY u.id"
        )
        return [
            NamedId(int(row_id), str(name), bool(keyed)) for row_id, name, keyed in _rows(self._db)
        ]

    def _account(self) -> Account | None:
        row = _row(self._db)
        return None if row is None else _to_account(row)


_ACCOUNT = "SELECT id, name, password, suspended_until FROM user"
# What a deleted account's row is renamed to: no name REG accepts has a control character.
DELETED_ROW_NAME = "\x01deleted {}"


def _to_account(row: Sequence[object]) -> Account:
    user_id, name, password_hash, until = row
    return Account(
        User(int(str(user_id)), str(name)),
        str(password_hash),
        None if until is None else int(str(until)),
    )


class MySqlGroupRepository(SqlGroupRows):
    def __init__(self, cursor: MySQLCursor) -> None:
        super().__init__(cursor, MYSQL)
        self._db: MySQLCursor = cursor

    def create(self, name: str, description: str, creator_id: int) -> Group:
        # Checked first, so that a failure leaves no group without its creator.
        self._db.execute("SELECT 1 FROM user WHERE id = %s", (creator_id,))
        if self._db.fetchone() is None:
            raise UnknownUser()
        with constraints_as(unique=NameTaken):
            group_id = insert_with_next_id(
                self._db,
                "allgroup",
                "INSERT INTO allgroup (id, groupname, groupdesc) VALUES (%s, %s, %s)",
                (name, description),
            )
            self._db.execute(
                "INSERT INTO group_name_key (name_key, groupid) VALUES (%s, %s)",
                (name_key(name), group_id),
            )
        self.add_member(group_id, creator_id, Role.CREATOR)
        return Group(group_id, name, description)

    def members(self, group_id: int) -> list[Member]:
        self._db.execute(
            "SELECT u.id, u.name, g.grouprole, coalesce(m.until_ms, 0) FROM groupuser g"
            " JOIN user u ON u.id = g.userid LEFT JOIN groupmute m"
            " ON m.groupid = g.groupid AND m.userid = g.userid"
            " WHERE g.groupid = %s ORDER BY g.seq",
            (group_id,),
        )
        return [
            Member(User(int(user_id), str(name)), Role(role), int(muted))
            for user_id, name, role, muted in _rows(self._db)
        ]

    def _member_exists(self, group_id: int, user_id: int) -> bool:
        self._db.execute(
            # A locking read: the row as committed now, held until the change commits.
            "SELECT 1 FROM groupuser WHERE groupid = %s AND userid = %s FOR UPDATE",
            (group_id, user_id),
        )
        return self._db.fetchone() is not None

    def set_role(self, group_id: int, user_id: int, role: Role) -> bool:
        # rowcount counts changed rows only: a role given again counts 0, so ask first.
        if not self._member_exists(group_id, user_id):
            return False
        self._db.execute(
            "UPDATE groupuser SET grouprole = %s WHERE groupid = %s AND userid = %s",
            (role.value, group_id, user_id),
        )
        return True

    def set_muted(self, group_id: int, user_id: int, until_ms: int) -> bool:
        if not self._member_exists(group_id, user_id):
            return False
        self._db.execute(
            "INSERT INTO groupmute (groupid, userid, until_ms) VALUES (%s, %s, %s)"
            " ON DUPLICATE KEY UPDATE until_ms = VALUES(until_ms)",
            (group_id, user_id, until_ms),
        )
        return True

    def delete(self, group_id: int) -> bool:
        self._db.execute("DELETE FROM groupmute WHERE groupid = %s", (group_id,))
        self._db.execute("DELETE FROM groupuser WHERE groupid = %s", (group_id,))
        self._db.execute("DELETE FROM group_name_key WHERE groupid = %s", (group_id,))
        self._db.execute("DELETE FROM allgroup WHERE id = %s", (group_id,))
        return self._db.rowcount > 0

    def restore(self, group: Group) -> None:
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO allgroup (id, groupname, groupdesc) VALUES (%s, %s, %s)",
                (group.id, group.name, group.description),
            )
            self._db.execute(
                "INSERT INTO group_name_key (name_key, groupid) VALUES (%s, %s)",
                (name_key(group.name), group.id),
            )
        follow_id_sequence(self._db, "allgroup", group.id)


class MySqlMessageIdSequence:
    def __init__(self, cursor: MySQLCursor) -> None:
        self._db = cursor

    def reserve(self, count: int) -> int:
        if count < 0:
            raise ValueError("cannot reserve a negative number of message ids")
        # LAST_INSERT_ID(expr) hands the new value back with the UPDATE: one round trip.
        self._db.execute(
            "UPDATE message_id_sequence SET next = LAST_INSERT_ID(next + %s) WHERE id = 1",
            (count,),
        )
        assert self._db.lastrowid is not None
        return self._db.lastrowid - count

    def advance_past(self, msg_id: int) -> None:
        self._db.execute(
            "UPDATE message_id_sequence SET next = GREATEST(next, %s) WHERE id = 1", (msg_id + 1,)
        )


class MySqlWebhookOutbox(SqlDeadLetters):
    _db: MySQLCursor

    def __init__(self, cursor: MySQLCursor) -> None:
        super().__init__(cursor, MYSQL)

    def add(self, rows: Sequence[tuple[str, str]], now_ms: int) -> None:
        listed = [(conversation, body, now_ms) for conversation, body in rows]
        for start in range(0, len(listed), INBOX_CHUNK):
            chunk = listed[start : start + INBOX_CHUNK]
            # One multi-row INSERT per chunk: its ids follow the order of the rows.
            self._db.execute(
                "INSERT INTO webhook_outbox (conversation, body, created_ms) VALUES "
                + _placeholders_rows(len(chunk), 3),
                [value for row in chunk for value in row],
            )

    def pending(self, limit: int, excluding: Collection[str] = ()) -> list[WebhookRow]:
        skipped = list(excluding)
        where = f"WHERE conversation NOT IN ({_placeholders(len(skipped))})" if skipped else ""
        self._db.execute(
            f"SELECT id, conversation, body, created_ms FROM webhook_outbox {where}"
            " ORDER BY id LIMIT %s",
            (*skipped, limit),
        )
        rows: list[Any] = self._db.fetchall()
        return [WebhookRow(int(i), str(c), str(b), int(ms)) for i, c, b, ms in rows]

    def delete(self, ids: Collection[int]) -> None:
        listed = list(ids)
        for start in range(0, len(listed), INBOX_CHUNK):
            chunk = listed[start : start + INBOX_CHUNK]
            self._db.execute(
                f"DELETE FROM webhook_outbox WHERE id IN ({_placeholders(len(chunk))})", chunk
            )

    def stats(self) -> tuple[int, int | None]:
        self._db.execute("SELECT count(*) FROM webhook_outbox")
        count: Any = self._db.fetchone()
        self._db.execute("SELECT created_ms FROM webhook_outbox ORDER BY id LIMIT 1")
        oldest: Any = self._db.fetchone()
        return int(count[0]), None if oldest is None else int(oldest[0])

    def take_lease(self, owner: str, now_ms: int, until_ms: int) -> bool:
        # The UPDATE reads the newest committed row (a locking read) and holds it to the end.
        self._db.execute(
            "UPDATE webhook_lease SET owner = %s, until_ms = %s"
            " WHERE name = 'deliver' AND (owner = %s OR until_ms <= %s)",
            (owner, until_ms, owner, now_ms),
        )
        self._db.execute("SELECT owner FROM webhook_lease WHERE name = 'deliver' FOR UPDATE")
        row: Any = self._db.fetchone()
        return row is not None and str(row[0]) == owner




def _placeholders_rows(rows: int, columns: int) -> str:
    one = f"({_placeholders(columns)})"
    return ", ".join([one] * rows)


# Rows per statement, well within max_allowed_packet (a row of a long message is ~17 kB).
INBOX_CHUNK = 500
# A pos beyond every real one, for "before the newest".
NO_POS = 2**62


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


class MySqlInbox:
    """Positions come from inbox_head: one INSERT ... ON DUPLICATE KEY UPDATE raises the last_pos
    of every user of a batch, in user order (so two nodes' batches lock rows in the same order
    and never deadlock on them), and holds their rows locked until the transaction ends; a
    concurrent batch for the same user waits, then continues after it."""

    def __init__(self, cursor: MySQLCursor) -> None:
        self._db = cursor

    def append(self, entries: Sequence[tuple[int, Delivery]], now_ms: int) -> list[int]:
        if not entries:
            return []
        counts = Counter(user_id for user_id, _ in entries)
        next_pos = self._raise_heads(counts)
        positions, rows, messages = place(entries, next_pos)
        message_rows = [
            (msg_id, *dump_delivery(delivery), now_ms) for msg_id, delivery in messages.items()
        ]
        # executemany sends one multi-row INSERT per call.
        for start in range(0, len(message_rows), INBOX_CHUNK):
            self._db.executemany(
                "INSERT INTO inbox_message (msg_id, kind, body, created_ms)"
                " VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE msg_id = msg_id",
                message_rows[start : start + INBOX_CHUNK],
            )
        for start in range(0, len(rows), INBOX_CHUNK):
            self._db.executemany(
                "INSERT INTO inbox (userid, pos, msg_id, conversation) VALUES (%s, %s, %s, %s)",
                rows[start : start + INBOX_CHUNK],
            )
        return positions

    def restore(
        self, user_id: int, kept: Sequence[Kept], last_pos: int, read_pos: int, now_ms: int
    ) -> None:
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute(
                "INSERT INTO inbox_head (userid, last_pos, read_pos) VALUES (%s, %s, %s)"
                " ON DUPLICATE KEY UPDATE last_pos = VALUES(last_pos), read_pos = VALUES(read_pos)",
                (user_id, last_pos, read_pos),
            )
        if not kept:
            return
        self._db.executemany(
            "INSERT INTO inbox_message (msg_id, kind, body, created_ms)"
            " VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE msg_id = msg_id",
            [(k.delivery.msg_id, *dump_delivery(k.delivery), now_ms) for k in kept],
        )
        self._db.executemany(
            "INSERT INTO inbox (userid, pos, msg_id, conversation) VALUES (%s, %s, %s, %s)",
            [
                (user_id, k.pos, k.delivery.msg_id, conversation_of(user_id, k.delivery))
                for k in kept
            ],
        )

    def _raise_heads(self, counts: Mapping[int, int]) -> dict[int, int]:
        """Raise each user's last_pos by their count; return the first new pos of each."""
        users = sorted(counts)
        done: list[int] = []
        first: dict[int, int] = {}
        for start in range(0, len(users), INBOX_CHUNK):
            chunk = users[start : start + INBOX_CHUNK]
            try:
                with constraints_as(foreign_key=UnknownUser):
                    self._db.execute(
                        "INSERT INTO inbox_head (userid, last_pos) VALUES "
                        + ", ".join(["(%s, %s)"] * len(chunk))
                        + " ON DUPLICATE KEY UPDATE last_pos = last_pos + VALUES(last_pos)",
                        [value for user_id in chunk for value in (user_id, counts[user_id])],
                    )
            except UnknownUser:
                # The failed statement changed nothing; undo the chunks before it, so that
                # nothing is kept even if the caller goes on with the transaction.
                self._undo_heads(done, counts)
                raise
            done.extend(chunk)
            self._db.execute(
                "SELECT userid, last_pos FROM inbox_head"
                f" WHERE userid IN ({_placeholders(len(chunk))})",
                chunk,
            )
            for user_id, last_pos in _rows(self._db):
                first[int(user_id)] = int(last_pos) - counts[int(user_id)] + 1
        return first

    def _undo_heads(self, users: Sequence[int], counts: Mapping[int, int]) -> None:
        for user_id in users:
            self._db.execute(
                "UPDATE inbox_head SET last_pos = last_pos - %s WHERE userid = %s",
                (counts[user_id], user_id),
            )

    def last_pos(self, user_id: int) -> int:
        self._db.execute("SELECT last_pos FROM inbox_head WHERE userid = %s", (user_id,))
        row = _row(self._db)
        return 0 if row is None else int(row[0])

    def oldest_pos(self, user_id: int) -> int:
        self._db.execute("SELECT min(pos) FROM inbox WHERE userid = %s", (user_id,))
        row = _row(self._db)
        if row is None or row[0] is None:
            return self.last_pos(user_id) + 1
        return int(row[0])

    def after(self, user_id: int, since: int, limit: int) -> list[Kept]:
        self._db.execute(
            "SELECT i.pos, m.kind, m.body FROM inbox i JOIN inbox_message m"
            " ON m.msg_id = i.msg_id WHERE i.userid = %s AND i.pos > %s ORDER BY i.pos LIMIT %s",
            (user_id, since, max(limit, 0)),
        )
        return [
            Kept(int(pos), load_delivery(str(kind), str(body)))
            for pos, kind, body in _rows(self._db)
        ]

    def count_after(self, user_id: int, since: int) -> int:
        self._db.execute(
            "SELECT count(*) FROM inbox WHERE userid = %s AND pos > %s", (user_id, since)
        )
        return _single(self._db)

    def conversation(
        self,
        user_id: int,
        *,
        peer_id: int | None = None,
        group_id: int | None = None,
        before: int | None = None,
        limit: int,
    ) -> list[Kept]:
        self._db.execute(
            "SELECT i.pos, m.kind, m.body FROM inbox i JOIN inbox_message m"
            " ON m.msg_id = i.msg_id WHERE i.userid = %s AND i.conversation = %s"
            " AND i.pos < %s ORDER BY i.pos DESC LIMIT %s",
            (
                user_id,
                conversation_key(peer_id, group_id),
                NO_POS if before is None else before,
                max(limit, 0),
            ),
        )
        return [
            Kept(int(pos), load_delivery(str(kind), str(body)))
            for pos, kind, body in reversed(_rows(self._db))
        ]

    def read_pos(self, user_id: int) -> int:
        self._db.execute("SELECT read_pos FROM inbox_head WHERE userid = %s", (user_id,))
        row = _row(self._db)
        return 0 if row is None else int(row[0])

    def set_read_pos(self, user_id: int, pos: int) -> bool:
        if pos <= 0:
            return False
        with constraints_as(foreign_key=UnknownUser):
            # Affected rows: 1 inserted, 2 updated, 0 unchanged.
            self._db.execute(
                "INSERT INTO inbox_head (userid, read_pos) VALUES (%s, %s)"
                " ON DUPLICATE KEY UPDATE read_pos = GREATEST(read_pos, VALUES(read_pos))",
                (user_id, pos),
            )
        return self._db.rowcount > 0

    def marks(self, user_id: int) -> dict[str, DeviceMark]:
        self._db.execute(
            "SELECT device, pos, beyond FROM inbox_device WHERE userid = %s", (user_id,)
        )
        return {
            str(device): DeviceMark(int(pos), frozenset(orjson.loads(str(beyond))))
            for device, pos, beyond in _rows(self._db)
        }

    def set_mark(self, user_id: int, device: str, mark: DeviceMark) -> None:
        self.set_marks({(user_id, device): mark})

    def set_marks(self, marks: Mapping[tuple[int, str], DeviceMark]) -> None:
        if not marks:
            return
        # In key order, so that two nodes lock device rows in the same order; executemany
        # sends one multi-row INSERT per chunk, and a failed one changes nothing.
        rows = [
            (user_id, device, mark.pos, orjson.dumps(sorted(mark.beyond)).decode())
            for (user_id, device), mark in sorted(marks.items())
        ]
        if len(rows) > INBOX_CHUNK:  # all or nothing across chunks: check the users first
            users = sorted({row[0] for row in rows})
            self._db.execute(
                f"SELECT count(*) FROM user WHERE id IN ({_placeholders(len(users))})", users
            )
            if _single(self._db) != len(users):
                raise UnknownUser()
        with constraints_as(foreign_key=UnknownUser):
            for start in range(0, len(rows), INBOX_CHUNK):
                self._db.executemany(
                    "INSERT INTO inbox_device (userid, device, pos, beyond)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON DUPLICATE KEY UPDATE pos = VALUES(pos), beyond = VALUES(beyond)",
                    rows[start : start + INBOX_CHUNK],
                )

    def prune(self, kept_before_ms: int, limit: int) -> int:
        # An entry is as old as its message (kept when the message first was): the oldest
        # messages go with their entries, at most limit entries a batch; a message with more
        # entries left goes in a later batch.
        if limit <= 0:
            return 0
        self._db.execute(
            "SELECT msg_id FROM inbox_message WHERE created_ms < %s ORDER BY created_ms LIMIT %s",
            (kept_before_ms, limit),
        )
        old = [int(msg_id) for (msg_id,) in _rows(self._db)]
        gone = 0
        newest: dict[int, int] = {}
        for start in range(0, len(old), INBOX_CHUNK):
            if gone >= limit:
                break
            chunk = old[start : start + INBOX_CHUNK]
            self._db.execute(
                "SELECT userid, pos FROM inbox"
                f" WHERE msg_id IN ({_placeholders(len(chunk))}) LIMIT %s FOR UPDATE",
                (*chunk, limit - gone),
            )
            rows = [(int(user_id), int(pos)) for user_id, pos in _rows(self._db)]
            if not rows:
                continue
            # The rows just locked, found the same way (a DELETE by (userid, pos) pairs takes
            # MariaDB 6 times as long).
            self._db.execute(
                f"DELETE FROM inbox WHERE msg_id IN ({_placeholders(len(chunk))}) LIMIT %s",
                (*chunk, len(rows)),
            )
            # Counted as deleted: another node pruning at once may have taken some.
            gone += self._db.rowcount
            for user_id, pos in rows:
                if pos > newest.get(user_id, 0):
                    newest[user_id] = pos
        gone += self._close_holes(newest)
        self._forget_messages(old)
        return gone

    def _close_holes(self, newest: Mapping[int, int]) -> int:
        """Delete each user's entries before the newest of theirs that went, so that what is
        kept is always a run up to last_pos: a session syncing from before it never meets a
        hole. (Entries are pruned by their messages' time, and the batches of two nodes can
        keep positions slightly out of time order, as their clocks differ.) Their messages,
        if left without entries, go with the next batch."""
        closed = 0
        users = sorted(newest.items())
        for start in range(0, len(users), INBOX_CHUNK):
            chunk = users[start : start + INBOX_CHUNK]
            self._db.execute(
                "DELETE FROM inbox WHERE "
                + " OR ".join(["(userid = %s AND pos < %s)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
            closed += self._db.rowcount
        return closed

    def prune_user(self, user_id: int, up_to_pos: int) -> int:
        self._db.execute(
            "SELECT DISTINCT msg_id FROM inbox WHERE userid = %s AND pos <= %s",
            (user_id, up_to_pos),
        )
        msg_ids = {int(msg_id) for (msg_id,) in _rows(self._db)}
        self._db.execute("DELETE FROM inbox WHERE userid = %s AND pos <= %s", (user_id, up_to_pos))
        gone = self._db.rowcount
        self._forget_messages(msg_ids)
        return gone

    def _forget_messages(self, msg_ids: Iterable[int]) -> None:
        """Delete those of these messages that no inbox entry refers to any more."""
        remaining = iter(sorted(msg_ids))
        while batch := list(islice(remaining, INBOX_CHUNK)):
            self._db.execute(
                f"DELETE FROM inbox_message WHERE msg_id IN ({_placeholders(len(batch))})"
                " AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.msg_id = inbox_message.msg_id)",
                batch,
            )


class MySqlImportRepository:
    """Only for importing another server's data: rows that keep the ids they had there."""

    def __init__(self, cursor: MySQLCursor) -> None:
        self._db = cursor

    def is_empty(self) -> bool:
        self._db.execute("SELECT (SELECT count(*) FROM user) + (SELECT count(*) FROM allgroup)")
        return _single(self._db) == 0

    def add_user(self, user_id: int, name: str, password_hash: str) -> None:
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO user (id, name, password) VALUES (%s, %s, %s)",
                (user_id, name, password_hash),
            )
        # A name that differs only in case from an earlier one is imported without its key.
        self._db.execute(
            "INSERT IGNORE INTO user_name_key (name_key, userid) VALUES (%s, %s)",
            (name_key(name), user_id),
        )
        self._follow("user", user_id)

    def add_group(self, group_id: int, name: str, description: str) -> None:
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO allgroup (id, groupname, groupdesc) VALUES (%s, %s, %s)",
                (group_id, name, description),
            )
        self._db.execute(
            "INSERT IGNORE INTO group_name_key (name_key, groupid) VALUES (%s, %s)",
            (name_key(name), group_id),
        )
        self._follow("allgroup", group_id)

    def _follow(self, table: str, used_id: int) -> None:
        """New rows get ids after every id imported."""
        self._db.execute(
            "UPDATE id_sequence SET next = GREATEST(next, %s) WHERE tablename = %s",
            (used_id + 1, table),
        )
