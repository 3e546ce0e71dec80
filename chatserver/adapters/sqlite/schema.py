"""The SQLite schema, as an ordered list of migrations, and the settings of every connection.

The database's ``PRAGMA user_version`` counts the migrations applied. To change the schema,
append a step to MIGRATIONS; never edit a step that has shipped.
"""

import sqlite3
import time
from os import PathLike

Migration = tuple[str, ...]

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
)

LATEST_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_SECONDS = 10.0


class SchemaTooNew(RuntimeError):
    """The database was written by a newer chatserver than this one."""


def connect(path: str | PathLike[str]) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are begun explicitly) and tune it."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
    )
    _switch_to_wal(connection)
    connection.execute("PRAGMA synchronous = NORMAL")
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
