"""Importing the database of the original C++ chat server into an empty chatserver database.

Kept: user and group ids and names, friendships (a row in either direction, duplicated or not,
becomes one mutual friendship), group members and their roles, and the chats waiting in
`offlinemessage`, in the order they were stored, with fresh msg_ids, as each user's inbox
(pos 1, 2, ...). Plaintext passwords are hashed. Rows naming a user or group that is not there
are skipped and counted, and so are stored messages that are not a whole chat object (invalid or
truncated JSON). All in one transaction: an import that fails leaves the target empty.

Keeping ids is not something the ports offer, so each target adapter lends an import-only
repository (`imports`) beside the usual ones.
"""

import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeGuard, TypeVar

import anyio
import orjson
from anyio import CapacityLimiter, to_thread
from attrs import frozen
from mysql.connector import Error
from mysql.connector.cursor import MySQLCursor

from chatserver.adapters.clock import SystemClock
from chatserver.adapters.mysql.repositories import MySqlImportRepository
from chatserver.adapters.mysql.unit_of_work import MySqlTransaction, connect, open_mysql_as
from chatserver.adapters.mysql.url import InvalidMySqlUrl, parse_mysql_url, redact_password
from chatserver.adapters.security import ScryptHasher
from chatserver.adapters.sqlite import schema as sqlite_schema
from chatserver.adapters.sqlite.repositories import constraints_as
from chatserver.adapters.sqlite.unit_of_work import SqliteTransaction
from chatserver.domain.errors import NameTaken, Unavailable, UnknownGroup, UnknownUser
from chatserver.domain.groups import Role
from chatserver.domain.messages import Delivery, DirectMessage, GroupMessage
from chatserver.domain.names import name_key
from chatserver.domain.ports import Transaction

T = TypeVar("T")

LEGACY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time, as the original server wrote it
ONE_CHAT, GROUP_CHAT = 6, 10


class LegacyImportError(RuntimeError):
    """The import cannot start or cannot finish; the message says why, without passwords."""


@frozen
class ImportReport:
    users: int
    friendships: int
    groups: int
    memberships: int
    messages: int
    skipped_rows: int  # naming a missing user or group, or a name already taken
    skipped_messages: int  # not a whole chat object

    def summary(self) -> str:
        return (
            f"imported {self.users} users, {self.friendships} friendships, {self.groups} groups,"
            f" {self.memberships} memberships and {self.messages} waiting messages;"
            f" skipped {self.skipped_rows} rows naming a missing user or group or a taken name,"
            f" and {self.skipped_messages} unreadable stored messages"
        )


@frozen
class LegacyData:
    """The original server's tables, as read."""

    users: list[tuple[int, str, str]]  # id, name, plaintext password
    friends: list[tuple[int, int]]
    groups: list[tuple[int, str, str]]  # id, name, description
    members: list[tuple[int, int, str]]  # group id, user id, role
    messages: list[tuple[int, str]]  # recipient id, JSON text


class ImportRepository(Protocol):
    """Only for imports: rows that keep the ids they had in the other database."""

    def is_empty(self) -> bool: ...

    def add_user(self, user_id: int, name: str, password_hash: str) -> None:
        """Raises NameTaken if the name is in use."""
        ...

    def add_group(self, group_id: int, name: str, description: str) -> None:
        """Raises NameTaken if the name is in use."""
        ...


class ImportTransaction(Transaction, Protocol):
    @property
    def imports(self) -> ImportRepository: ...


class ImportTarget(Protocol):
    async def run(self, work: Callable[[ImportTransaction], T]) -> T: ...

    async def aclose(self) -> None: ...


def import_legacy(source_url: str, target_url: str, charset: str = "gbk") -> ImportReport:
    """Copy the original server's database at source_url into the empty database at target_url.

    target_url is mysql://... or sqlite:///...; its schema is created as needed. charset is how
    the original server spoke to its database (see read_legacy).
    """
    return anyio.run(copy_legacy, source_url, target_url, charset)


async def copy_legacy(source_url: str, target_url: str, charset: str = "gbk") -> ImportReport:
    target = await open_target(target_url)
    try:
        # Checked before the slow part (hashing), and again in the transaction that writes.
        if not await target.run(lambda tx: tx.imports.is_empty()):
            raise LegacyImportError(f"{redact_password(target_url)} is not empty")
        legacy = await to_thread.run_sync(read_legacy, source_url, charset)
        hashes = await hash_passwords(legacy.users)
        now_ms = SystemClock().now_ms()
        return await target.run(partial(write, legacy=legacy, hashes=hashes, now_ms=now_ms))
    except Unavailable as error:
        raise LegacyImportError(f"{redact_password(target_url)}: {error}") from error
    finally:
        await target.aclose()


# --------------------------------------------------------------------------- reading


def read_legacy(source_url: str, charset: str = "gbk") -> LegacyData:
    """The original server's tables.

    charset "gbk": the original server ran `set names gbk` on every connection while its
    clients sent UTF-8, so MySQL took each UTF-8 byte pair for a GBK character and stored
    that (张三 is kept as 寮犱笁); reading through GBK gives the client's bytes back, as the
    original did. A value whose bytes are not UTF-8 came from a client that really sent GBK
    (or was written in some other way), and is decoded as GBK. charset "utf8": the server was
    changed to `set names utf8`, and the text is read as it is stored.
    """
    if charset not in TEXT_DECODERS:
        raise LegacyImportError(f"unknown legacy charset {charset!r}: use gbk or utf8")
    column = _gbk_bytes if charset == "gbk" else _as_stored
    text = TEXT_DECODERS[charset]
    try:
        where = parse_mysql_url(source_url)
        connection = connect(where)
    except (InvalidMySqlUrl, Error) as error:
        raise LegacyImportError(f"cannot open {redact_password(source_url)}: {error}") from error
    try:
        cursor = connection.cursor()

        def rows(query: str) -> list[tuple[Any, ...]]:
            cursor.execute(query)
            return list(cursor.fetchall())

        return LegacyData(
            users=[
                (int(i), text(name), text(password))
                for i, name, password in rows(
                    f"SELECT id, {column('name')}, {column('password')} FROM user ORDER BY id"
                )
            ],
            friends=[(int(a), int(b)) for a, b in rows("SELECT userid, friendid FROM friend")],
            groups=[
                (int(i), text(name), text(description))
                for i, name, description in rows(
                    f"SELECT id, {column('groupname')}, {column('groupdesc')}"
                    " FROM allgroup ORDER BY id"
                )
            ],
            members=[
                (int(g), int(u), _text(role) or Role.NORMAL.value)
                for g, u, role in rows("SELECT groupid, userid, grouprole FROM groupuser")
            ],
            # No ORDER BY: the table has no ordering column, and a scan of an InnoDB table
            # without a key returns rows in the order they were inserted.
            messages=[
                (int(u), text(message))
                for u, message in rows(f"SELECT userid, {column('message')} FROM offlinemessage")
            ],
        )
    except Error as error:
        raise LegacyImportError(f"cannot read {where.redacted()}: {error}") from error
    finally:
        connection.close()


def _as_stored(column: str) -> str:
    return column


def _gbk_bytes(column: str) -> str:
    """The column as the original server read it: its text in GBK, as bytes."""
    return f"CAST(CONVERT({column} USING gbk) AS BINARY)"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _text_through_gbk(value: object) -> str:
    if not isinstance(value, bytes | bytearray):
        return _text(value)
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(value).decode("gbk", errors="replace")


TEXT_DECODERS: dict[str, Callable[[object], str]] = {"gbk": _text_through_gbk, "utf8": _text}


def parse_chat(recipient_id: int, message: str) -> Callable[[int], Delivery] | None:
    """The stored chat object as a delivery waiting for its msg_id; None if it is not one."""
    try:
        chat = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(chat, dict):
        return None
    sender_id, sender_name, text = chat.get("id"), chat.get("name"), chat.get("msg")
    if not (_is_id(sender_id) and isinstance(sender_name, str) and isinstance(text, str)):
        return None
    sent_at_ms = parse_time(chat.get("time"))
    if chat.get("msgid") == ONE_CHAT:
        return partial(
            DirectMessage,
            sender_id=sender_id,
            sender_name=sender_name,
            recipient_id=recipient_id,
            text=text,
            sent_at_ms=sent_at_ms,
        )
    if chat.get("msgid") == GROUP_CHAT and _is_id(chat.get("groupid")):
        return partial(
            GroupMessage,
            group_id=chat["groupid"],
            sender_id=sender_id,
            sender_name=sender_name,
            text=text,
            sent_at_ms=sent_at_ms,
        )
    return None


def _is_id(value: object) -> TypeGuard[int]:
    return type(value) is int and value > 0


def parse_time(value: object) -> int:
    """Milliseconds since the epoch of the original's local `YYYY-MM-DD HH:MM:SS`, else 0."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.strptime(value, LEGACY_TIME_FORMAT).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return 0


async def hash_passwords(users: Sequence[tuple[int, str, str]]) -> dict[int, str]:
    hasher = ScryptHasher(threads=os.cpu_count() or 1)
    hashes: dict[int, str] = {}

    async def hash_one(user_id: int, password: str) -> None:
        hashes[user_id] = await hasher.hash(password)

    async with anyio.create_task_group() as tg:
        for user_id, _, password in users:
            tg.start_soon(hash_one, user_id, password)
    return hashes


# --------------------------------------------------------------------------- writing


def write(
    tx: ImportTransaction, *, legacy: LegacyData, hashes: dict[int, str], now_ms: int
) -> ImportReport:
    if not tx.imports.is_empty():
        raise LegacyImportError("the target database is not empty")
    skipped = 0
    users: set[int] = set()
    for user_id, name, _ in legacy.users:
        try:
            tx.imports.add_user(user_id, name, hashes[user_id])
            users.add(user_id)
        except NameTaken:
            skipped += 1

    pairs: set[tuple[int, int]] = set()
    for a, b in legacy.friends:
        pair = (min(a, b), max(a, b))
        if a == b or a not in users or b not in users:
            skipped += 1
        elif pair not in pairs:
            tx.friends.befriend(*pair)
            pairs.add(pair)

    groups: set[int] = set()
    for group_id, name, description in legacy.groups:
        try:
            tx.imports.add_group(group_id, name, description)
            groups.add(group_id)
        except NameTaken:
            skipped += 1

    memberships = 0
    for group_id, user_id, role in legacy.members:
        try:
            if tx.groups.add_member(group_id, user_id, Role(role)):
                memberships += 1
        except (UnknownGroup, UnknownUser, ValueError):  # ValueError: a role never heard of
            skipped += 1

    chats: list[tuple[int, Callable[[int], Delivery]]] = []
    unreadable = 0
    for user_id, message in legacy.messages:
        chat = parse_chat(user_id, message)
        if chat is None:
            unreadable += 1
        elif user_id not in users:
            skipped += 1
        else:
            chats.append((user_id, chat))
    first = tx.message_ids.reserve(len(chats))
    waiting = [(user_id, chat(msg_id)) for msg_id, (user_id, chat) in enumerate(chats, start=first)]
    # Each user's inbox, pos 1, 2, ... in the order they were stored, kept from now on.
    tx.inbox.append(waiting, now_ms)

    return ImportReport(
        users=len(users),
        friendships=len(pairs),
        groups=len(groups),
        memberships=memberships,
        messages=len(chats),
        skipped_rows=skipped,
        skipped_messages=unreadable,
    )


async def open_target(url: str) -> ImportTarget:
    try:
        if url.startswith("mysql:"):
            return await open_mysql_as(MySqlImportTransaction, url, pool_size=1)
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return await SqliteImportTarget.open(Path(url.removeprefix("sqlite:///")))
    except (InvalidMySqlUrl, Unavailable, sqlite3.Error) as error:
        raise LegacyImportError(f"cannot open {redact_password(url)}: {error}") from error
    raise LegacyImportError(
        f"cannot import into {redact_password(url)!r}: use mysql://... or sqlite:///FILE"
    )


class MySqlImportTransaction(MySqlTransaction):
    def __init__(self, cursor: MySQLCursor) -> None:
        super().__init__(cursor)
        self.imports: ImportRepository = MySqlImportRepository(cursor)


class SqliteImportRepository:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def is_empty(self) -> bool:
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM user) + (SELECT count(*) FROM allgroup)"
        ).fetchone()
        return bool(row[0] == 0)

    # AUTOINCREMENT remembers the largest id inserted: new rows follow the imported ones.
    def add_user(self, user_id: int, name: str, password_hash: str) -> None:
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO user (id, name, password) VALUES (?, ?, ?)",
                (user_id, name, password_hash),
            )
        # A name that differs only in case from an earlier one is imported without its key.
        self._db.execute(
            "INSERT OR IGNORE INTO user_name_key (name_key, userid) VALUES (?, ?)",
            (name_key(name), user_id),
        )

    def add_group(self, group_id: int, name: str, description: str) -> None:
        with constraints_as(unique=NameTaken):
            self._db.execute(
                "INSERT INTO allgroup (id, groupname, groupdesc) VALUES (?, ?, ?)",
                (group_id, name, description),
            )
        self._db.execute(
            "INSERT OR IGNORE INTO group_name_key (name_key, groupid) VALUES (?, ?)",
            (name_key(name), group_id),
        )


class SqliteImportTransaction(SqliteTransaction):
    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self.imports: ImportRepository = SqliteImportRepository(connection)


class SqliteImportTarget:
    """A SQLite file, written by one import transaction at a time."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._limiter = CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> "SqliteImportTarget":
        def open_upgraded() -> sqlite3.Connection:
            connection = sqlite_schema.connect(path)
            sqlite_schema.upgrade(connection)
            return connection

        return cls(await to_thread.run_sync(open_upgraded))

    async def run(self, work: Callable[[ImportTransaction], T]) -> T:
        return await to_thread.run_sync(self._run_in_thread, work, limiter=self._limiter)

    def _run_in_thread(self, work: Callable[[ImportTransaction], T]) -> T:
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(SqliteImportTransaction(self._connection))
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise
        return result

    async def aclose(self) -> None:
        await to_thread.run_sync(self._connection.close, limiter=self._limiter)
