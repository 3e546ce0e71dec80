"""The SQLite unit of work: one connection, used by one worker thread at a time.

sqlite3 connections are not safe to share between threads, and SQLite allows one writer
anyway; a CapacityLimiter of 1 makes every transaction take its turn, off the event loop.
"""

import sqlite3
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, TypeVar

from anyio import CapacityLimiter, ClosedResourceError, to_thread

from chatserver.adapters.file_rows import SqlFileRepository
from chatserver.adapters.friend_rows import SqlFriendRepository
from chatserver.adapters.sqlite.repositories import (
    SQLITE,
    SqliteGroupRepository,
    SqliteInbox,
    SqliteMessageIdSequence,
    SqliteUserRepository,
    SqliteWebhookOutbox,
)
from chatserver.adapters.sqlite.schema import connect, upgrade
from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import (
    FileRepository,
    FriendRepository,
    GroupRepository,
    Inbox,
    MessageIdSequence,
    Transaction,
    UserRepository,
    WebhookOutbox,
)

T = TypeVar("T")

Path = str | PathLike[str]


class SqliteTransaction:
    """The repositories, all speaking through the unit of work's one connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._cursor = connection.cursor()
        self.users: UserRepository = SqliteUserRepository(connection)
        self.friends: FriendRepository = SqlFriendRepository(self._cursor, SQLITE)
        self.groups: GroupRepository = SqliteGroupRepository(self._cursor)
        self.inbox: Inbox = SqliteInbox(connection)
        self.message_ids: MessageIdSequence = SqliteMessageIdSequence(connection)
        self.webhooks: WebhookOutbox = SqliteWebhookOutbox(self._cursor)
        self.files: FileRepository = SqlFileRepository(self._execute, self._last_id)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._cursor.execute(sql.replace("%s", "?"), params).fetchall()

    def _last_id(self) -> int:
        row_id = self._cursor.lastrowid
        assert row_id is not None
        return row_id


class SqliteUnitOfWork:
    """Runs each piece of work in its own transaction, in a worker thread, one at a time."""

    def __init__(self, connection: sqlite3.Connection, limiter: CapacityLimiter) -> None:
        self._connection = connection
        self._limiter = limiter
        self._transaction = SqliteTransaction(connection)
        self._closed = False

    async def run(self, work: Callable[[Transaction], T]) -> T:
        # Not abandoned on cancellation: the thread always finishes with COMMIT or ROLLBACK.
        return await to_thread.run_sync(self._run_in_thread, work, limiter=self._limiter)

    async def aclose(self) -> None:
        await to_thread.run_sync(self._close_in_thread, limiter=self._limiter)

    def _run_in_thread(self, work: Callable[[Transaction], T]) -> T:
        if self._closed:
            raise ClosedResourceError("the SQLite unit of work is closed")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:  # another process kept the write lock too long
            raise Unavailable() from error
        try:
            result = work(self._transaction)
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise
        return result

    def _close_in_thread(self) -> None:
        self._closed = True
        self._connection.close()


async def open_sqlite(path: Path) -> SqliteUnitOfWork:
    """Open (creating or upgrading the schema as needed) the database file at path."""
    limiter = CapacityLimiter(1)
    connection = await to_thread.run_sync(_open_upgraded, path, limiter=limiter)
    return SqliteUnitOfWork(connection, limiter)


def upgrade_sqlite(path: Path) -> int:
    """Create or upgrade the schema of the database file at path; return its schema version."""
    connection = connect(path)
    try:
        return upgrade(connection)
    finally:
        connection.close()


def _open_upgraded(path: Path) -> sqlite3.Connection:
    connection = connect(path)
    try:
        upgrade(connection)
    except BaseException:
        connection.close()
        raise
    return connection
