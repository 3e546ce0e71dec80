"""The SQLite unit of work: one connection, used by one worker thread at a time.

sqlite3 connections are not safe to share between threads, and SQLite allows one writer
anyway; the unit of work's own pool of one thread (adapters.worker_threads) runs every
transaction in turn, off the event loop.
"""

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from os import PathLike
from typing import Any, TypeVar

from anyio import ClosedResourceError

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
from chatserver.adapters.worker_threads import WorkerThreads, run_in
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

    def __init__(self, connection: sqlite3.Connection, thread: WorkerThreads) -> None:
        self._connection = connection
        self._thread = thread  # one worker
        self._transaction = SqliteTransaction(connection)
        self._closed = False

    async def run(self, work: Callable[[Transaction], T]) -> T:
        if self._closed:
            raise ClosedResourceError("the SQLite unit of work is closed")
        # Not abandoned on cancellation: the thread always finishes with COMMIT or ROLLBACK.
        return await run_in(self._thread, partial(self._run_in_thread, work))

    async def aclose(self) -> None:
        await run_in(self._thread, self._close_in_thread)
        self._thread.shutdown(wait=False)

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
    thread = WorkerThreads(1, "chatserver-sqlite")
    try:
        connection = await run_in(thread, partial(_open_upgraded, path))
    except BaseException:
        thread.shutdown(wait=False)
        raise
    return SqliteUnitOfWork(connection, thread)


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
