"""SQLite repositories: plain synchronous SQL, run by the unit of work inside one transaction."""

import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import orjson

from chatserver.adapters.group_rows import SqlGroupRows
from chatserver.adapters.inbox_keys import conversation_key, conversation_of, place
from chatserver.adapters.serialization import dump_delivery, load_delivery
from chatserver.adapters.sql_dialect import Dialect
from chatserver.adapters.webhook_rows import SqlDeadLetters
from chatserver.domain.errors import ChatError, NameTaken, UnknownUser
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import Delivery, Kept
from chatserver.domain.names import NamedId, name_key
from chatserver.domain.ports import DeviceMark, WebhookRow
from chatserver.domain.users import DELETED_USER_NAME, Account, User

# What a deleted account's row is renamed to: no name REG accepts has a control character.
DELETED_ROW_NAME = "\x01deleted {}"
# Rewrites the sender's name in every kept message a deleted account sent (a full scan of the
# messages: deleting an account is rare, and done once).
RENAME_SENDER = (
    ("json_set(body, '$.sender_name', ?)", "kind IN ('direct', 'group')", "$.sender_id"),
    ("json_set(body, '$.responder_name', ?)", "kind = 'friend_answer'", "$.responder_id"),
)


@contextmanager
def constraints_as(
    *,
    unique: type[ChatError] | None = None,
    foreign_key: type[ChatError] | None = None,
    primary_key: type[ChatError] | None = None,
) -> Iterator[None]:
    """Turn a broken UNIQUE, FOREIGN KEY or PRIMARY KEY constraint into the domain error that
    explains it."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        if unique and error.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE":
            raise unique() from error
        if primary_key and error.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY":
            raise primary_key() from error
        if foreign_key and error.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            raise foreign_key() from error
        raise


# What SQLite says its own way, for the statements written once for both databases.
SQLITE = Dialect(
    placeholder="?",
    keep_existing=" ON CONFLICT DO NOTHING",
    update_existing=" ON CONFLICT ({key}) DO UPDATE SET {column} = excluded.{column}",
    constraints_as=constraints_as,
)


class SqliteUserRepository:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def add(self, name: str, password_hash: str) -> User:
        with constraints_as(unique=NameTaken):
            cursor = self._db.execute(
                "INSERT INTO user (name, password) VALUES (?, ?)", (name, password_hash)
            )
            assert cursor.lastrowid is not None
            self._db.execute(
                "INSERT INTO user_name_key (name_key, userid) VALUES (?, ?)",
                (name_key(name), cursor.lastrowid),
            )
        return User(cursor.lastrowid, name)

    def get(self, user_id: int) -> User | None:
        row = self._db.execute(
            "SELECT id, name FROM user WHERE id = ? AND deleted = 0", (user_id,)
        ).fetchone()
        return None if row is None else User(*row)

    def account(self, user_id: int) -> Account | None:
        row = self._db.execute(
            "SELECT id, name, password, suspended_until FROM user WHERE id = ? AND deleted = 0",
            (user_id,),
        ).fetchone()
        return None if row is None else Account(User(row[0], row[1]), row[2], row[3])

    def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        cursor = self._db.execute(
            "UPDATE user SET password = ? WHERE id = ? AND deleted = 0", (password_hash, user_id)
        )
        return cursor.rowcount > 0

    def account_by_name(self, name: str) -> Account | None:
        row = self._db.execute(
            "SELECT id, name, password, suspended_until FROM user WHERE name = ? AND deleted = 0",
            (name,),
        ).fetchone()
        return None if row is None else Account(User(row[0], row[1]), row[2], row[3])

    def name_in_use(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM user WHERE name = ? AND deleted = 0"
            " UNION ALL SELECT 1 FROM user_name_key WHERE name_key = ? LIMIT 1",
            (name, name_key(name)),
        ).fetchone()
        return row is not None

    def set_suspended(self, user_id: int, until_ms: int | None) -> bool:
        cursor = self._db.execute(
            "UPDATE user SET suspended_until = ? WHERE id = ? AND deleted = 0", (until_ms, user_id)
        )
        return cursor.rowcount > 0

    def accounts(self, after_id: int, limit: int) -> list[Account]:
        rows = self._db.execute(
            "SELECT id, name, password, suspended_until FROM user WHERE id > ? AND deleted = 0"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [Account(User(i, name), password, until) for i, name, password, until in rows]

    def restore(self, account: Account) -> None:
        user = account.user
        with constraints_as(unique=NameTaken, primary_key=NameTaken):
            self._db.execute(
                "INSERT INTO user (id, name, password, suspended_until) VALUES (?, ?, ?, ?)",
                (user.id, user.name, account.password_hash, account.suspended_until_ms),
            )
            self._db.execute(
                "INSERT INTO user_name_key (name_key, userid) VALUES (?, ?)",
                (name_key(user.name), user.id),
            )

    def delete(self, user_id: int) -> bool:
        db = self._db
        cursor = db.execute(
            "UPDATE user SET deleted = 1, name = ?, password = '!deleted', suspended_until = NULL"
            " WHERE id = ? AND deleted = 0",
            (DELETED_ROW_NAME.format(user_id), user_id),
        )
        if cursor.rowcount == 0:
            return False
        db.execute("DELETE FROM user_name_key WHERE userid = ?", (user_id,))
        for statement in (
            "DELETE FROM friend WHERE userid = ? OR friendid = ?",
            "DELETE FROM friend_request WHERE requester = ? OR addressee = ?",
            "DELETE FROM userblock WHERE blocker = ? OR blocked = ?",
            "DELETE FROM friend_decline WHERE requester = ? OR addressee = ?",
        ):
            db.execute(statement, (user_id, user_id))
        db.execute("DELETE FROM groupuser WHERE userid = ?", (user_id,))
        db.execute("DELETE FROM inbox_device WHERE userid = ?", (user_id,))
        msg_ids = [
            row[0]
            for row in db.execute("SELECT DISTINCT msg_id FROM inbox WHERE userid = ?", (user_id,))
        ]
        db.execute("DELETE FROM inbox WHERE userid = ?", (user_id,))
        db.execute("UPDATE inbox_head SET read_pos = 0 WHERE userid = ?", (user_id,))
        db.executemany(
            "DELETE FROM inbox_message WHERE msg_id = ?"
            " AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.msg_id = inbox_message.msg_id)",
            [(msg_id,) for msg_id in msg_ids],
        )
        for new_body, kinds, sender in RENAME_SENDER:
            db.execute(
                f"UPDATE inbox_message SET body = {new_body}"
                f" WHERE {kinds} AND json_extract(body, '{sender}') = ?",
                (DELETED_USER_NAME, user_id),
            )
        return True

    def names(self) -> list[NamedId]:
        rows = self._db.execute(
            "SELECT u.id, u.name, k.name_key IS NOT NULL FROM user u"
            " LEFT JOIN user_name_key k ON k.userid = u.id WHERE u.deleted = 0 ORDER BY u.id"
        )
        return [NamedId(row_id, name, bool(keyed)) for row_id, name, keyed in rows]


class SqliteGroupRepository(SqlGroupRows):
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        super().__init__(cursor, SQLITE)
        self._db: sqlite3.Cursor = cursor

    def create(self, name: str, description: str, creator_id: int) -> Group:
        # Checked first, so that a failure leaves no group without its creator.
        if self._db.execute("SELECT 1 FROM user WHERE id = ?", (creator_id,)).fetchone() is None:
            raise UnknownUser()
        with constraints_as(unique=NameTaken):
            group_id = self._db.execute(
                "INSERT INTO allgroup (groupname, groupdesc) VALUES (?, ?)", (name, description)
            ).lastrowid
            assert group_id is not None
            self._db.execute(
                "INSERT INTO group_name_key (name_key, groupid) VALUES (?, ?)",
                (name_key(name), group_id),
            )
        self.add_member(group_id, creator_id, Role.CREATOR)
        return Group(group_id, name, description)

    def members(self, group_id: int) -> list[Member]:
        rows = self._db.execute(
            "SELECT u.id, u.name, g.grouprole, g.muted_until FROM groupuser g"
            " JOIN user u ON u.id = g.userid WHERE g.groupid = ? ORDER BY g.seq",
            (group_id,),
        )
        return [
            Member(User(user_id, name), Role(role), muted) for user_id, name, role, muted in rows
        ]

    def set_role(self, group_id: int, user_id: int, role: Role) -> bool:
        cursor = self._db.execute(
            "UPDATE groupuser SET grouprole = ? WHERE groupid = ? AND userid = ?",
            (role.value, group_id, user_id),
        )
        return cursor.rowcount > 0

    def set_muted(self, group_id: int, user_id: int, until_ms: int) -> bool:
        cursor = self._db.execute(
            "UPDATE groupuser SET muted_until = ? WHERE groupid = ? AND userid = ?",
            (until_ms, group_id, user_id),
        )
        return cursor.rowcount > 0

    def delete(self, group_id: int) -> bool:
        self._db.execute("DELETE FROM groupuser WHERE groupid = ?", (group_id,))
        self._db.execute("DELETE FROM group_name_key WHERE groupid = ?", (group_id,))
        cursor = self._db.execute("DELETE FROM allgroup WHERE id = ?", (group_id,))
        return cursor.rowcount > 0

    def restore(self, group: Group) -> None:
        with constraints_as(unique=NameTaken, primary_key=NameTaken):
            self._db.execute(
                "INSERT INTO allgroup (id, groupname, groupdesc) VALUES (?, ?, ?)",
                (group.id, group.name, group.description),
            )
            self._db.execute(
                "INSERT INTO group_name_key (name_key, groupid) VALUES (?, ?)",
                (name_key(group.name), group.id),
            )


class SqliteMessageIdSequence:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def reserve(self, count: int) -> int:
        if count < 0:
            raise ValueError("cannot reserve a negative number of message ids")
        # fetchall finishes the statement, which must not be left running at COMMIT.
        rows = self._db.execute(
            "UPDATE message_id_sequence SET next = next + ? RETURNING next - ?", (count, count)
        ).fetchall()
        first: int = rows[0][0]
        return first

    def advance_past(self, msg_id: int) -> None:
        self._db.execute("UPDATE message_id_sequence SET next = max(next, ?)", (msg_id + 1,))


class SqliteWebhookOutbox(SqlDeadLetters):
    _db: sqlite3.Cursor

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        super().__init__(cursor, SQLITE)

    def add(self, rows: Sequence[tuple[str, str]], now_ms: int) -> None:
        self._db.executemany(
            "INSERT INTO webhook_outbox (conversation, body, created_ms) VALUES (?, ?, ?)",
            [(conversation, body, now_ms) for conversation, body in rows],
        )

    def pending(self, limit: int, excluding: Collection[str] = ()) -> list[WebhookRow]:
        skipped = list(excluding)
        where = f"WHERE conversation NOT IN ({', '.join('?' * len(skipped))})" if skipped else ""
        rows = self._db.execute(
            f"SELECT id, conversation, body, created_ms FROM webhook_outbox {where}"
            " ORDER BY id LIMIT ?",
            (*skipped, limit),
        ).fetchall()
        return [WebhookRow(*row) for row in rows]

    def delete(self, ids: Collection[int]) -> None:
        listed = list(ids)
        for start in range(0, len(listed), INBOX_CHUNK):
            chunk = listed[start : start + INBOX_CHUNK]
            self._db.execute(
                f"DELETE FROM webhook_outbox WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )

    def stats(self) -> tuple[int, int | None]:
        (count,) = self._db.execute("SELECT count(*) FROM webhook_outbox").fetchone()
        oldest = self._db.execute(
            "SELECT created_ms FROM webhook_outbox ORDER BY id LIMIT 1"
        ).fetchone()
        return count, None if oldest is None else oldest[0]

    def take_lease(self, owner: str, now_ms: int, until_ms: int) -> bool:
        self._db.execute(
            "UPDATE webhook_lease SET owner = ?, until_ms = ?"
            " WHERE name = 'deliver' AND (owner = ? OR until_ms <= ?)",
            (owner, until_ms, owner, now_ms),
        )
        row = self._db.execute("SELECT owner FROM webhook_lease WHERE name = 'deliver'").fetchone()
        return row is not None and row[0] == owner




# Rows per statement: SQLite takes at most 32,766 parameters in one.
INBOX_CHUNK = 2_000
# Messages per DELETE when pruning.
PRUNE_CHUNK = 500
# A pos beyond every real one, for "before the newest".
NO_POS = 2**62


class SqliteInbox:
    """Positions come from inbox_head: one multi-row upsert raises the last_pos of every user of
    a batch and returns it, inside the unit of work's BEGIN IMMEDIATE transaction, whose write
    lock makes the writers of every process (node) on the file take turns."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def append(self, entries: Sequence[tuple[int, Delivery]], now_ms: int) -> list[int]:
        if not entries:
            return []
        counts = Counter(user_id for user_id, _ in entries)
        next_pos = self._raise_heads(counts)
        positions, rows, messages = place(entries, next_pos)
        self._db.executemany(
            "INSERT INTO inbox_message (msg_id, kind, body, created_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(msg_id, *dump_delivery(delivery), now_ms) for msg_id, delivery in messages.items()],
        )
        self._db.executemany(
            "INSERT INTO inbox (userid, pos, msg_id, conversation) VALUES (?, ?, ?, ?)",
            rows,
        )
        return positions

    def restore(
        self, user_id: int, kept: Sequence[Kept], last_pos: int, read_pos: int, now_ms: int
    ) -> None:
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute(
                "INSERT INTO inbox_head (userid, last_pos, read_pos) VALUES (?, ?, ?)"
                " ON CONFLICT (userid) DO UPDATE"
                " SET last_pos = excluded.last_pos, read_pos = excluded.read_pos",
                (user_id, last_pos, read_pos),
            )
        self._db.executemany(
            "INSERT INTO inbox_message (msg_id, kind, body, created_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(k.delivery.msg_id, *dump_delivery(k.delivery), now_ms) for k in kept],
        )
        self._db.executemany(
            "INSERT INTO inbox (userid, pos, msg_id, conversation) VALUES (?, ?, ?, ?)",
            [
                (user_id, k.pos, k.delivery.msg_id, conversation_of(user_id, k.delivery))
                for k in kept
            ],
        )

    def _raise_heads(self, counts: Mapping[int, int]) -> dict[int, int]:
        """Raise each user's last_pos by their count; return the first new pos of each."""
        first: dict[int, int] = {}
        users = sorted(counts)
        for start in range(0, len(users), INBOX_CHUNK):
            chunk = users[start : start + INBOX_CHUNK]
            try:
                with constraints_as(foreign_key=UnknownUser):
                    raised = self._db.execute(
                        "INSERT INTO inbox_head (userid, last_pos) VALUES "
                        + ", ".join(["(?, ?)"] * len(chunk))
                        + " ON CONFLICT (userid) DO UPDATE"
                        " SET last_pos = last_pos + excluded.last_pos RETURNING userid, last_pos",
                        [value for user_id in chunk for value in (user_id, counts[user_id])],
                    ).fetchall()
            except UnknownUser:
                # The failed statement changed nothing; undo the chunks before it, so that
                # nothing is kept even if the caller goes on with the transaction.
                self._db.executemany(
                    "UPDATE inbox_head SET last_pos = last_pos - ? WHERE userid = ?",
                    [(counts[user_id], user_id) for user_id in first],
                )
                raise
            for user_id, last_pos in raised:
                first[user_id] = last_pos - counts[user_id] + 1
        return first

    def last_pos(self, user_id: int) -> int:
        row = self._db.execute(
            "SELECT last_pos FROM inbox_head WHERE userid = ?", (user_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def oldest_pos(self, user_id: int) -> int:
        row = self._db.execute("SELECT min(pos) FROM inbox WHERE userid = ?", (user_id,)).fetchone()
        return self.last_pos(user_id) + 1 if row[0] is None else int(row[0])

    def after(self, user_id: int, since: int, limit: int) -> list[Kept]:
        rows = self._db.execute(
            "SELECT i.pos, m.kind, m.body FROM inbox i JOIN inbox_message m"
            " ON m.msg_id = i.msg_id WHERE i.userid = ? AND i.pos > ? ORDER BY i.pos LIMIT ?",
            (user_id, since, max(limit, 0)),
        )
        return [Kept(pos, load_delivery(kind, body)) for pos, kind, body in rows]

    def count_after(self, user_id: int, since: int) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM inbox WHERE userid = ? AND pos > ?", (user_id, since)
        ).fetchone()
        return int(row[0])

    def conversation(
        self,
        user_id: int,
        *,
        peer_id: int | None = None,
        group_id: int | None = None,
        before: int | None = None,
        limit: int,
    ) -> list[Kept]:
        rows = self._db.execute(
            "SELECT i.pos, m.kind, m.body FROM inbox i JOIN inbox_message m"
            " ON m.msg_id = i.msg_id WHERE i.userid = ? AND i.conversation = ? AND i.pos < ?"
            " ORDER BY i.pos DESC LIMIT ?",
            (
                user_id,
                conversation_key(peer_id, group_id),
                NO_POS if before is None else before,
                max(limit, 0),
            ),
        ).fetchall()
        return [Kept(pos, load_delivery(kind, body)) for pos, kind, body in reversed(rows)]

    def read_pos(self, user_id: int) -> int:
        row = self._db.execute(
            "SELECT read_pos FROM inbox_head WHERE userid = ?", (user_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def set_read_pos(self, user_id: int, pos: int) -> bool:
        if pos <= 0:
            return False
        with constraints_as(foreign_key=UnknownUser):
            rows = self._db.execute(
                "INSERT INTO inbox_head (userid, read_pos) VALUES (?, ?)"
                " ON CONFLICT (userid) DO UPDATE SET read_pos = excluded.read_pos"
                " WHERE read_pos < excluded.read_pos RETURNING read_pos",
                (user_id, pos),
            ).fetchall()
        return bool(rows)

    def marks(self, user_id: int) -> dict[str, DeviceMark]:
        rows = self._db.execute(
            "SELECT device, pos, beyond FROM inbox_device WHERE userid = ?", (user_id,)
        )
        return {
            device: DeviceMark(pos, frozenset(orjson.loads(beyond))) for device, pos, beyond in rows
        }

    def set_mark(self, user_id: int, device: str, mark: DeviceMark) -> None:
        self.set_marks({(user_id, device): mark})

    def set_marks(self, marks: Mapping[tuple[int, str], DeviceMark]) -> None:
        if not marks:
            return
        rows = [
            (user_id, device, mark.pos, orjson.dumps(sorted(mark.beyond)).decode())
            for (user_id, device), mark in sorted(marks.items())
        ]
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute("SAVEPOINT set_marks")
            try:
                self._db.executemany(
                    "INSERT INTO inbox_device (userid, device, pos, beyond) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (userid, device) DO UPDATE"
                    " SET pos = excluded.pos, beyond = excluded.beyond",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK TO set_marks")
                raise
            finally:
                self._db.execute("RELEASE set_marks")

    def prune(self, kept_before_ms: int, limit: int) -> int:
        # An entry is as old as its message (kept when the message first was): the oldest
        # messages go with their entries, at most limit entries a batch; a message with more
        # entries left goes in a later batch. Then each user's entries before the newest that
        # went go too (see _close_holes).
        if limit <= 0:
            return 0
        old = [
            msg_id
            for (msg_id,) in self._db.execute(
                "SELECT msg_id FROM inbox_message WHERE created_ms < ? ORDER BY created_ms LIMIT ?",
                (kept_before_ms, limit),
            ).fetchall()
        ]
        gone: list[tuple[int, int]] = []
        for start in range(0, len(old), PRUNE_CHUNK):
            if len(gone) >= limit:
                break
            chunk = old[start : start + PRUNE_CHUNK]
            gone += self._db.execute(
                "DELETE FROM inbox WHERE (userid, pos) IN (SELECT userid, pos FROM inbox"
                f" WHERE msg_id IN ({', '.join(['?'] * len(chunk))}) LIMIT ?)"
                " RETURNING userid, pos",
                (*chunk, limit - len(gone)),
            ).fetchall()
        closed = self._close_holes(gone)
        self._forget_messages(old)
        return len(gone) + closed

    def _close_holes(self, gone: Iterable[tuple[int, int]]) -> int:
        """Delete each user's entries before the newest of theirs that went, so that what is
        kept is always a run up to last_pos: a session syncing from before it never meets a
        hole. (Entries are pruned by their messages' time, and the batches of two nodes can
        keep positions slightly out of time order, as their clocks differ.) Their messages,
        if left without entries, go with the next batch."""
        newest: dict[int, int] = {}
        for user_id, pos in gone:
            if pos > newest.get(user_id, 0):
                newest[user_id] = pos
        cursor = self._db.executemany(
            "DELETE FROM inbox WHERE userid = ? AND pos < ?", list(newest.items())
        )
        return max(cursor.rowcount, 0)

    def prune_user(self, user_id: int, up_to_pos: int) -> int:
        gone = self._db.execute(
            "DELETE FROM inbox WHERE userid = ? AND pos <= ? RETURNING msg_id",
            (user_id, up_to_pos),
        ).fetchall()
        self._forget_messages({msg_id for (msg_id,) in gone})
        return len(gone)

    def _forget_messages(self, msg_ids: Iterable[int]) -> None:
        """Delete those of these messages that no inbox entry refers to any more."""
        self._db.executemany(
            "DELETE FROM inbox_message WHERE msg_id = ?"
            " AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.msg_id = inbox_message.msg_id)",
            [(msg_id,) for msg_id in msg_ids],
        )
