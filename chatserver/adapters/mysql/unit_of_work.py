"""The MySQL unit of work: a pool of connections, used from worker threads behind a limiter.

mysql-connector-python is blocking, so each transaction runs in a worker thread. Its pool raises
at once when empty instead of waiting, so a CapacityLimiter of the pool's size lets only as many
threads in as there are connections; the rest queue on the limiter, for POOL_WAIT_SECONDS at
most. Connections are opened as they are first needed, so a quiet node holds few.
"""

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar

import mysql.connector
from anyio import CapacityLimiter, ClosedResourceError, move_on_after, to_thread
from mysql.connector import Error, errorcode
from mysql.connector.cursor import MySQLCursor
from mysql.connector.pooling import MySQLConnectionPool, PooledMySQLConnection

from chatserver.adapters.file_rows import SqlFileRepository
from chatserver.adapters.friend_rows import SqlFriendRepository
from chatserver.adapters.mysql.repositories import (
    MYSQL,
    MySqlGroupRepository,
    MySqlInbox,
    MySqlMessageIdSequence,
    MySqlUserRepository,
    MySqlWebhookOutbox,
)
from chatserver.adapters.mysql.schema import (
    LOCK_TIMEOUT_SECONDS,
    account_of,
    create_database,
    create_database_statement,
    upgrade,
)
from chatserver.adapters.mysql.url import MySqlUrl, parse_mysql_url, quote_name
from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import (
    FileRepository,
    FriendRepository,
    GroupRepository,
    Inbox,
    MessageIdSequence,
    UserRepository,
    WebhookOutbox,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Tx = TypeVar("Tx")

MAX_POOL_SIZE = 32  # mysql-connector-python refuses bigger pools

# Every wait on the server is bounded: a request fails with errno 11 rather than hang.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 10
LOCK_WAIT_TIMEOUT_SECONDS = 5  # row and metadata locks; below the read timeout, so it shows
POOL_WAIT_SECONDS = 10  # for a free connection, when every one is busy
UPGRADE_READ_TIMEOUT_SECONDS = LOCK_TIMEOUT_SECONDS + 240  # DDL may wait for the upgrade lock

# Errors that say "the server cannot serve this now".
TRANSIENT_ERRORS = (
    mysql.connector.errors.InterfaceError,  # lost or refused connections, among others
    mysql.connector.errors.OperationalError,
    mysql.connector.errors.PoolError,
    mysql.connector.errors.ConnectionTimeoutError,
    mysql.connector.errors.ReadTimeoutError,
    mysql.connector.errors.WriteTimeoutError,
)
TRANSIENT_ERRNOS = frozenset(
    {
        errorcode.ER_LOCK_WAIT_TIMEOUT,
        errorcode.ER_LOCK_DEADLOCK,
        errorcode.ER_CON_COUNT_ERROR,
        errorcode.ER_SERVER_SHUTDOWN,
        1927,  # MariaDB's ER_CONNECTION_KILLED
        1969,  # MariaDB's ER_STATEMENT_TIMEOUT
    }
)


def connection_settings(
    where: MySqlUrl,
    *,
    read_timeout: int = READ_TIMEOUT_SECONDS,
    lock_wait_timeout: int = LOCK_WAIT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    return {
        "host": where.host,
        "port": where.port,
        "user": where.user,
        "password": where.password,
        "database": where.database,
        "charset": "utf8mb4",
        "collation": "utf8mb4_bin",
        "autocommit": False,
        "buffered": True,
        "connection_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": read_timeout,
        "write_timeout": read_timeout,
        "sql_mode": "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION",
        "init_command": (
            f"SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout:d},"
            f" SESSION lock_wait_timeout = {lock_wait_timeout:d}"
        ),
    }


def is_transient(error: Error) -> bool:
    """True for a lost or refused connection, a timeout, a deadlock: worth trying again later."""
    return isinstance(error, TRANSIENT_ERRORS) or error.errno in TRANSIENT_ERRNOS


class MySqlTransaction:
    """The repositories, all speaking through one cursor of one connection."""

    def __init__(self, cursor: MySQLCursor) -> None:
        self.users: UserRepository = MySqlUserRepository(cursor)
        self.friends: FriendRepository = SqlFriendRepository(cursor, MYSQL)
        self.groups: GroupRepository = MySqlGroupRepository(cursor)
        self.inbox: Inbox = MySqlInbox(cursor)
        self.message_ids: MessageIdSequence = MySqlMessageIdSequence(cursor)
        self.webhooks: WebhookOutbox = MySqlWebhookOutbox(cursor)
        self._cursor = cursor
        self.files: FileRepository = SqlFileRepository(self._execute, self._last_id)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql, tuple(params))
        return list(self._cursor.fetchall()) if self._cursor.with_rows else []

    def _last_id(self) -> int:
        row_id = self._cursor.lastrowid
        assert row_id is not None
        return int(row_id)


class MySqlUnitOfWork(Generic[Tx]):
    """Runs each piece of work in its own transaction on a pooled connection, in a worker thread."""

    def __init__(self, pool: MySQLConnectionPool, transaction: Callable[[MySQLCursor], Tx]) -> None:
        self._pool = pool
        self._transaction = transaction
        self._connections = CapacityLimiter(pool.pool_size)
        self._threads = CapacityLimiter(pool.pool_size)  # not the shared default of to_thread
        self._lock = threading.Lock()  # taking and opening connections; closing
        self._closed = False

    async def run(self, work: Callable[[Tx], T]) -> T:
        turn = object()
        with move_on_after(POOL_WAIT_SECONDS) as waiting:
            await self._connections.acquire_on_behalf_of(turn)
        if waiting.cancelled_caught:
            log.warning("MySQL unavailable: no free connection for %ss", POOL_WAIT_SECONDS)
            raise Unavailable()
        try:
            # Not abandoned on cancellation: the thread always finishes with COMMIT or ROLLBACK.
            return await to_thread.run_sync(self._run_in_thread, work, limiter=self._threads)
        finally:
            self._connections.release_on_behalf_of(turn)

    async def aclose(self) -> None:
        """Close the idle connections now, and the busy ones as their work ends."""
        await to_thread.run_sync(self._close_in_thread)

    def _run_in_thread(self, work: Callable[[Tx], T]) -> T:
        connection = self._take()
        try:
            return self._transact(connection, work)
        finally:
            self._give_back(connection)

    def _transact(self, connection: PooledMySQLConnection, work: Callable[[Tx], T]) -> T:
        try:
            result = work(self._transaction(connection.cursor()))
            connection.commit()
        except BaseException as error:
            self._roll_back(connection)
            if isinstance(error, Error) and is_transient(error):
                log.warning("MySQL unavailable: %s", error)
                raise Unavailable() from error
            raise
        return result

    @staticmethod
    def _roll_back(connection: PooledMySQLConnection) -> None:
        try:
            connection.rollback()
        except Error:
            # Broken: closed here, it is opened again by the pool before its next use.
            with suppress(Error, OSError):
                connection.disconnect()

    def _take(self) -> PooledMySQLConnection:
        # One thread at a time, as the driver's own pool lock has it anyway.
        with self._lock:
            if self._closed:
                raise ClosedResourceError("the MySQL unit of work is closed")
            try:
                try:
                    # Pings the connection, and opens it again if the server dropped it.
                    return self._pool.get_connection()
                except mysql.connector.errors.PoolError:
                    # All connections opened so far are busy. At most pool_size threads pass
                    # the limiter, and this one holds none: there is room for one more.
                    self._pool.add_connection()
                    return self._pool.get_connection()
            except Error as error:
                log.warning("MySQL unavailable: %s", error)
                raise Unavailable() from error

    def _give_back(self, connection: PooledMySQLConnection) -> None:
        with self._lock:
            connection.close()  # back into the pool
            if self._closed:
                self._pool._remove_connections()

    def _close_in_thread(self) -> None:
        with self._lock:
            self._closed = True
            # The pool's one way to close its idle connections.
            self._pool._remove_connections()


async def open_mysql(url: str, *, pool_size: int = 8) -> MySqlUnitOfWork[MySqlTransaction]:
    """Open (creating or upgrading the schema as needed) the database at url."""
    return await open_mysql_as(MySqlTransaction, url, pool_size=pool_size)


async def open_mysql_as(
    transaction: Callable[[MySQLCursor], Tx], url: str, *, pool_size: int = 8
) -> MySqlUnitOfWork[Tx]:
    """Like open_mysql, for work that takes another kind of transaction (the legacy import's)."""
    if not 1 <= pool_size <= MAX_POOL_SIZE:
        raise ValueError(f"pool_size must be 1 to {MAX_POOL_SIZE}, not {pool_size}")
    where = parse_mysql_url(url)
    await to_thread.run_sync(upgrade_at, where)
    # Resetting the session on every return would cost a round trip and undo init_command.
    pool = MySQLConnectionPool(
        pool_size=pool_size, pool_name="chatserver", pool_reset_session=False
    )
    pool.set_config(**connection_settings(where))
    return MySqlUnitOfWork(pool, transaction)


def upgrade_mysql(url: str, *, create_database: bool = False) -> int:
    """Create or upgrade the schema of the database at url; return its schema version.
    With create_database, a missing database is created first, if the account may."""
    return upgrade_at(parse_mysql_url(url), create_database=create_database)


def upgrade_at(where: MySqlUrl, *, create_database: bool = False) -> int:
    try:
        connection = _connect_to_upgrade(where, create_database)
        try:
            return upgrade(connection)
        finally:
            connection.close()
    except Error as error:
        raise Unavailable(cannot_open(where, error)) from error


def _connect_to_upgrade(where: MySqlUrl, create: bool) -> Any:
    try:
        return connect(where, read_timeout=UPGRADE_READ_TIMEOUT_SECONDS)
    except Error as error:
        # 1044 too: MySQL does not tell an account without privileges whether a database exists.
        if error.errno not in (errorcode.ER_BAD_DB_ERROR, errorcode.ER_DBACCESS_DENIED_ERROR):
            raise
        missing = error.errno == errorcode.ER_BAD_DB_ERROR
    server = connect(where.server())
    try:
        account = account_of(server)
        if create and create_database(server, where.database):
            log.info("created database %s", quote_name(where.database))
            return connect(where, read_timeout=UPGRADE_READ_TIMEOUT_SECONDS)
    finally:
        server.close()
    raise Unavailable(_missing_database(where, account, missing=missing, create=create))


def _missing_database(where: MySqlUrl, account: str, *, missing: bool, create: bool) -> str:
    """One line: the database is not there (or not for this account), and what to run."""
    name = quote_name(where.database)
    create_it = create_database_statement(where.database)
    grant = f"GRANT ALL PRIVILEGES ON {name}.* TO {account}"
    server = f"{where.host}:{where.port}"
    if missing and not create:
        return (
            f"database {name} does not exist on {server}: create it with "
            f"`chatserver db upgrade --database {where.redacted()}`, or run {create_it};"
        )
    if missing:
        return (
            f"database {name} does not exist on {server} and {account} may not create it: "
            f"as a MySQL administrator, run {create_it}; {grant};"
        )
    return (
        f"{account} may not use database {name} on {server} (or it does not exist): "
        f"as a MySQL administrator, run {create_it}; {grant};"
    )


def cannot_open(where: MySqlUrl, error: Error) -> str:
    """One line for an operator: why the database at where cannot be used, and what to do."""
    server = f"{where.host}:{where.port}"
    if error.errno in (errorcode.CR_CONN_HOST_ERROR, errorcode.CR_UNKNOWN_HOST):
        return (
            f"cannot reach MySQL at {server} ({where.redacted()}): {error.msg}; "
            "start MySQL there or correct --database"
        )
    if error.errno == errorcode.ER_ACCESS_DENIED_ERROR:
        return (
            f"MySQL at {server} refused user {where.user!r}: {error.msg}; "
            "correct the user or password in --database"
        )
    return f"cannot open {where.redacted()}: {error}"


def connect(where: MySqlUrl, **settings: int) -> Any:
    """One connection outside any pool, for upgrades and for reading other databases."""
    return mysql.connector.connect(**connection_settings(where, **settings))
