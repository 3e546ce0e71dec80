"""The SQLite schema, as an ordered list of migrations, and the settings of every connection.

The database's ``PRAGMA user_version`` counts the migrations applied. To change the schema,
append a step to MIGRATIONS; never edit a step that has shipped.
"""

import sqlite3
import time
from collections.abc import Callable
from os import PathLike

from chatserver.domain.names import name_key

# A step's statements; a callable among them is run with the connection (what SQL cannot do).
Migration = tuple[str | Callable[[sqlite3.Connection], None], ...]

# Milliseconds since the Unix epoch, in SQL (unixepoch('subsec') needs SQLite 3.42).
_NOW_MS = "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"

# Issue 16.10: a name's key is now its look-alike skeleton (Unicode TR 39) with case folded, so
# "ѕсоре" in Cyrillic takes the key of "scope". Every keyed name is keyed again, the earliest
# first; a later one that looks like an earlier one keeps working without its key (`chatserver
# db check-names` lists it). A step of MIGRATIONS (named for tests/integration/
# test_name_migration.py).
REKEY_NAMES: Migration = (
    lambda db: _rekey_names(db, "user", "name", "user_name_key", "userid"),
    lambda db: _rekey_names(db, "allgroup", "groupname", "group_name_key", "groupid"),
)


MIGRATIONS: tuple[Migration, ...] = (
    (
        # AUTOINCREMENT everywhere: an id, once used, is never used again.
        """CREATE TABLE user (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            password TEXT NOT NULL
        )""",
        # Stored in both directions, as the original server did.
        """CREATE TABLE friend (
            userid INTEGER NOT NULL REFERENCES user(id),
            friendid INTEGER NOT NULL REFERENCES user(id),
            PRIMARY KEY (userid, friendid)
        ) WITHOUT ROWID""",
        """CREATE TABLE friend_request (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            requester INTEGER NOT NULL REFERENCES user(id),
            addressee INTEGER NOT NULL REFERENCES user(id),
            UNIQUE (addressee, requester)
        )""",
        """CREATE TABLE allgroup (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            groupname TEXT NOT NULL UNIQUE,
            groupdesc TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE groupuser (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            groupid INTEGER NOT NULL REFERENCES allgroup(id),
            userid INTEGER NOT NULL REFERENCES user(id),
            grouprole TEXT NOT NULL CHECK (grouprole IN ('creator', 'normal')),
            UNIQUE (groupid, userid)
        )""",
        "CREATE INDEX groupuser_by_user ON groupuser (userid)",
        """CREATE TABLE offlinemessage (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            userid INTEGER NOT NULL REFERENCES user(id),
            msg_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            UNIQUE (userid, msg_id)
        )""",
        # One row: the next message id to hand out.
        """CREATE TABLE message_id_sequence (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            next INTEGER NOT NULL
        )""",
        "INSERT INTO message_id_sequence (id, next) VALUES (1, 1)",
    ),
    (
        # Version 2, the inbox (PROTOCOL.md "The inbox"): each message once, with the time it
        # was first kept, which is when each of its entries leaves the history window ...
        """CREATE TABLE inbox_message (
            msg_id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX inbox_message_by_time ON inbox_message (created_ms)",
        # ... each user's newest pos (handed out by raising it in the storing transaction) and
        # what they have read ...
        """CREATE TABLE inbox_head (
            userid INTEGER PRIMARY KEY REFERENCES user(id),
            last_pos INTEGER NOT NULL DEFAULT 0,
            read_pos INTEGER NOT NULL DEFAULT 0
        )""",
        # ... and a small row per user and pos. conversation: adapters.inbox_keys (the peer's
        # id, minus the group's id, NULL for none). No foreign keys: the head row of each user
        # is written first in the same transaction, and checking them would cost every row.
        # Every index here costs every entry ~0.5-1 us: pruning finds old entries through their
        # messages (one row per message) rather than through a time column per entry.
        """CREATE TABLE inbox (
            userid INTEGER NOT NULL,
            pos INTEGER NOT NULL,
            msg_id INTEGER NOT NULL,
            conversation INTEGER,
            PRIMARY KEY (userid, pos)
        ) WITHOUT ROWID""",
        """CREATE INDEX inbox_by_conversation ON inbox (userid, conversation, pos)
            WHERE conversation IS NOT NULL""",
        "CREATE INDEX inbox_by_message ON inbox (msg_id)",
        """CREATE TABLE inbox_device (
            userid INTEGER NOT NULL REFERENCES user(id),
            device TEXT NOT NULL,
            pos INTEGER NOT NULL,
            beyond TEXT NOT NULL,
            PRIMARY KEY (userid, device)
        ) WITHOUT ROWID""",
        # What waited in version 1 becomes each user's inbox, in the order it was stored,
        # kept from now on.
        f"""INSERT INTO inbox_message (msg_id, kind, body, created_ms)
            SELECT msg_id, kind, body, {_NOW_MS} FROM offlinemessage
            WHERE seq IN (SELECT min(seq) FROM offlinemessage GROUP BY msg_id)""",
        """INSERT INTO inbox (userid, pos, msg_id, conversation)
            SELECT userid, row_number() OVER (PARTITION BY userid ORDER BY seq), msg_id,
                CASE kind
                    WHEN 'direct' THEN
                        CASE WHEN json_extract(body, '$.sender_id') = userid
                            THEN json_extract(body, '$.recipient_id')
                            ELSE json_extract(body, '$.sender_id') END
                    WHEN 'group' THEN -json_extract(body, '$.group_id')
                END
            FROM offlinemessage""",
        """INSERT INTO inbox_head (userid, last_pos, read_pos)
            SELECT id, (SELECT count(*) FROM offlinemessage WHERE userid = user.id), 0
            FROM user""",
    ),
    (
        # Version 1's store of waiting deliveries: step 2 moved its rows into the inbox, and
        # nothing reads it any more.
        "DROP TABLE offlinemessage",
    ),
    (
        # Version 2, groups that can be run: the admin role and mutes. SQLite cannot change a
        # CHECK constraint, so the table is rebuilt (nothing refers to it), keeping seq: the
        # order members joined in, which decides who succeeds a leaving creator.
        """CREATE TABLE groupuser_v4 (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            groupid INTEGER NOT NULL REFERENCES allgroup(id),
            userid INTEGER NOT NULL REFERENCES user(id),
            grouprole TEXT NOT NULL CHECK (grouprole IN ('creator', 'admin', 'normal')),
            muted_until INTEGER NOT NULL DEFAULT 0,
            UNIQUE (groupid, userid)
        )""",
        """INSERT INTO groupuser_v4 (seq, groupid, userid, grouprole)
            SELECT seq, groupid, userid, grouprole FROM groupuser""",
        "DROP TABLE groupuser",
        "ALTER TABLE groupuser_v4 RENAME TO groupuser",
        "CREATE INDEX groupuser_by_user ON groupuser (userid)",
    ),
    (
        # Version 2, people who can protect themselves: who blocks whom (BLOCK_MSG). Read by
        # blocker at login (LOGIN's `blocked`) and by blocked user (whose chats to them fail).
        """CREATE TABLE userblock (
            blocker INTEGER NOT NULL REFERENCES user(id),
            blocked INTEGER NOT NULL REFERENCES user(id),
            PRIMARY KEY (blocker, blocked)
        ) WITHOUT ROWID""",
        "CREATE INDEX userblock_by_blocked ON userblock (blocked)",
    ),
    (
        # Version 2, an operator's suspension (ms since the epoch; NULL: not suspended) and a
        # deleted account's row, kept (deleted = 1, its name freed) so that what refers to its
        # id (others' kept messages, a write in flight) stays valid; it is never read as a user.
        "ALTER TABLE user ADD COLUMN suspended_until INTEGER",
        "ALTER TABLE user ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # Durable webhooks: events written with the transaction that keeps them, delivered in
        # id order per conversation and deleted once the receiver took them ...
        """CREATE TABLE webhook_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT NOT NULL,
            body TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        )""",
        # ... by one node at a time: the one whose lease lasts.
        """CREATE TABLE webhook_lease (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            until_ms INTEGER NOT NULL
        )""",
        "INSERT INTO webhook_lease (name, owner, until_ms) VALUES ('deliver', '', 0)",
    ),
    (
        # Names compared case-insensitively (issue 16.10): each name's key (NFKC, case
        # folded: chatserver.domain.names.name_key) is unique. Existing names take theirs in id
        # order; a later name with the same key as an earlier one ("bob" after "Bob") keeps
        # working without one (`chatserver db check-names` lists it).
        """CREATE TABLE user_name_key (
            userid INTEGER PRIMARY KEY REFERENCES user(id),
            name_key TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE group_name_key (
            groupid INTEGER PRIMARY KEY REFERENCES allgroup(id),
            name_key TEXT NOT NULL UNIQUE
        )""",
        lambda db: _key_existing_names(db, "user", "name", "user_name_key", "userid"),
        lambda db: _key_existing_names(db, "allgroup", "groupname", "group_name_key", "groupid"),
    ),
    (
        # Version 2, files (PROTOCOL.md "Files"): one row per upload (sha256 once its bytes
        # are stored, by that content address), and the kept messages that carry it.
        """CREATE TABLE chat_file (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            owner INTEGER NOT NULL,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            mime TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            sha256 TEXT
        )""",
        "CREATE INDEX chat_file_by_owner ON chat_file (owner, created_ms)",
        "CREATE INDEX chat_file_by_sha256 ON chat_file (sha256)",
        """CREATE TABLE chat_file_ref (
            file_id INTEGER NOT NULL REFERENCES chat_file(id) ON DELETE CASCADE,
            msg_id INTEGER NOT NULL,
            groupid INTEGER,
            userid INTEGER,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (file_id, msg_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX chat_file_ref_by_message ON chat_file_ref (msg_id)",
    ),
    (
        # Issue 13.4: when an addressee last declined a requester (ms since the epoch), so
        # that the requester may ask again only a day later. Declines older than a day are
        # forgotten whenever a new one is written.
        """CREATE TABLE friend_decline (
            requester INTEGER NOT NULL REFERENCES user(id),
            addressee INTEGER NOT NULL REFERENCES user(id),
            declined_ms INTEGER NOT NULL,
            PRIMARY KEY (requester, addressee)
        ) WITHOUT ROWID""",
        "CREATE INDEX friend_decline_by_time ON friend_decline (declined_ms)",
    ),
    (
        # Webhook dead letters: events the receiver kept refusing, set aside (same id) so
        # that their conversations go on; an operator lists, retries or drops them.
        """CREATE TABLE webhook_dead (
            id INTEGER PRIMARY KEY,
            conversation TEXT NOT NULL,
            body TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            died_ms INTEGER NOT NULL,
            reason TEXT NOT NULL
        )""",
    ),
    REKEY_NAMES,
)

LATEST_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_SECONDS = 10.0
# Pages the WAL may hold before a commit copies them into the database file (SQLite's default
# is 1,000). An inbox batch dirties about one leaf page per recipient per index, so at the
# default every second or third batch paid a checkpoint; with more pages between checkpoints
# each page is copied once for many batches that rewrote it: 26 % less CPU per inbox entry
# (200 users, batches of 200 entries, 60k-120k entries kept; docs/performance.md). The WAL
# file grows to about 40 MiB of 4 KiB pages.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def _key_existing_names(
    connection: sqlite3.Connection, table: str, column: str, keys: str, owner: str
) -> None:
    """Give every existing name its key, the earliest first; a duplicate key is left out."""
    rows = connection.execute(f"SELECT id, {column} FROM {table} ORDER BY id").fetchall()
    connection.executemany(
        f"INSERT OR IGNORE INTO {keys} (name_key, {owner}) VALUES (?, ?)",
        [(name_key(name), row_id) for row_id, name in rows],
    )


def _rekey_names(
    connection: sqlite3.Connection, table: str, column: str, keys: str, owner: str
) -> None:
    """Give every name that has a key today's key, the earliest first; one whose key an
    earlier name took is left without (it keeps working)."""
    rows = connection.execute(
        f"SELECT t.id, t.{column} FROM {keys} k JOIN {table} t ON t.id = k.{owner} ORDER BY t.id"
    ).fetchall()
    connection.execute(f"DELETE FROM {keys}")
    connection.executemany(
        f"INSERT OR IGNORE INTO {keys} (name_key, {owner}) VALUES (?, ?)",
        [(name_key(name), row_id) for row_id, name in rows],
    )


class SchemaTooNew(RuntimeError):
    """The database was written by a newer chatserver than this one."""


def connect(path: str | PathLike[str]) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are begun explicitly) and tune it."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
    )
    _switch_to_wal(connection)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """WAL mode, waiting out other processes that open the same new file at the same moment
    (SQLite reports their lock at once, without its busy handler, when waiting could deadlock).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def version_of(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return version


def upgrade(connection: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks, each in its own transaction; return the version."""
    for version, migration in enumerate(MIGRATIONS, start=1):
        # Checked again inside the write lock, in case another process migrates at the same time.
        if version_of(connection) >= version:
            continue
        connection.execute("BEGIN IMMEDIATE")
        try:
            if version_of(connection) < version:
                for statement in migration:
                    if callable(statement):
                        statement(connection)
                    else:
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {version:d}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    version = version_of(connection)
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this chatserver's {LATEST_VERSION}"
        )
    return version
