"""`chatserver db upgrade` turns a version 1 database into version 2 in place, on SQLite and on
MariaDB: every delivery waiting in `offlinemessage` becomes an entry of its user's inbox, in the
order it was stored, at pos 1..n, kept from the time of the upgrade; nothing is lost.

The version 1 database is built by applying only the migration steps version 1 shipped and
filling it with rows as a version 1 server wrote them (users by SQL, waiting
deliveries as version 1's MessageStore stored them: kind and the attrs fields as JSON).
"""

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from functools import partial
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from chatserver.adapters.mysql import schema as mysql_schema
from chatserver.adapters.mysql.unit_of_work import open_mysql
from chatserver.adapters.serialization import dump_delivery
from chatserver.adapters.sqlite import schema as sqlite_schema
from chatserver.adapters.sqlite.unit_of_work import open_sqlite
from chatserver.domain.messages import (
    Delivery,
    DirectMessage,
    FriendAnswer,
    GroupMessage,
    Kept,
)
from chatserver.domain.ports import Transaction, UnitOfWork
from tests.unit.contract.mysql_server import MYSQL
from tests.unit.contract.sample import TRICKY_TEXT

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

VERSION_1 = 1  # the steps version 1 of chatserver shipped

NAMES = ["alice", "bob", "carol", "dave"]  # ids 1..4; dave never had anything waiting
# What a version 1 server stored, in the order it stored it: msg_ids not in order, a group
# message waiting for two users, a message to oneself, a friend answer, text that breaks things.
WAITING: list[tuple[int, Delivery]] = [
    (1, DirectMessage(12, 2, "bob", 1, "hi alice", 1_700_000_000_012)),
    (2, GroupMessage(10, 5, 1, "alice", "hello group", 1_700_000_000_010)),
    (1, GroupMessage(11, 5, 3, "carol", TRICKY_TEXT, 1_700_000_000_011)),
    (3, GroupMessage(11, 5, 3, "carol", TRICKY_TEXT, 1_700_000_000_011)),
    (1, FriendAnswer(13, 3, "carol", accepted=True)),
    (3, DirectMessage(14, 3, "carol", 3, "note to self", 1_700_000_000_014)),
    (1, DirectMessage(9, 3, "carol", 1, "an older id, stored later", 1_700_000_000_009)),
    (2, DirectMessage(15, 1, "alice", 2, "你好 😀", 1_700_000_000_015)),
]


def in_order(user_id: int) -> list[Delivery]:
    return [delivery for user, delivery in WAITING if user == user_id]


def fill_version_1(
    insert_user: Callable[[Any], object], insert_waiting: Callable[[Any], object]
) -> None:
    # As version 1 wrote them (today's repositories write tables version 1 did not have).
    for user_id, name in enumerate(NAMES, start=1):
        insert_user((user_id, name, "hash"))
    # One at a time: version 1 stored each as it came, and seq keeps that order.
    for user_id, delivery in WAITING:
        insert_waiting((user_id, delivery.msg_id, *dump_delivery(delivery)))


def sqlite_version_1(path: Path) -> None:
    with closing(sqlite_schema.connect(path)) as connection:
        for statement in sqlite_schema.MIGRATIONS[VERSION_1 - 1]:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {VERSION_1}")
        connection.execute("BEGIN")
        fill_version_1(
            partial(connection.execute, "INSERT INTO user (id, name, password) VALUES (?, ?, ?)"),
            partial(
                connection.execute,
                "INSERT INTO offlinemessage (userid, msg_id, kind, body) VALUES (?, ?, ?, ?)",
            ),
        )
        connection.execute("COMMIT")
        assert sqlite_schema.version_of(connection) == VERSION_1


def mysql_version_1(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(mysql_schema, "MIGRATIONS", mysql_schema.MIGRATIONS[:VERSION_1])
        patched.setattr(mysql_schema, "LATEST_VERSION", VERSION_1)
        assert mysql_schema.upgrade(raw_mysql(url)) == VERSION_1
    connection = raw_mysql(url)
    try:
        cursor = connection.cursor()
        cursor.execute(
            "UPDATE id_sequence SET next = %s WHERE tablename = 'user'", (len(NAMES) + 1,)
        )
        fill_version_1(
            partial(cursor.execute, "INSERT INTO user (id, name, password) VALUES (%s, %s, %s)"),
            partial(
                cursor.execute,
                "INSERT INTO offlinemessage (userid, msg_id, kind, body) VALUES (%s, %s, %s, %s)",
            ),
        )
        connection.commit()
    finally:
        connection.close()


def raw_mysql(url: str) -> Any:
    user_host, database = url.removeprefix("mysql://").rsplit("/", 1)
    user, host_port = user_host.split("@")
    host, _, port = host_port.partition(":")
    return mysql.connector.connect(
        user=user.partition(":")[0],
        password=user.partition(":")[2],
        host=host,
        port=int(port or 3306),
        database=database,
        charset="utf8mb4",
        buffered=True,
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.fixture(params=["sqlite", "mysql"])
def version_1_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    if request.param == "sqlite":
        path = tmp_path / "v1.sqlite3"
        sqlite_version_1(path)
        return f"sqlite:///{path}"
    url = MYSQL.new_database()
    mysql_version_1(url, monkeypatch)
    return url


@asynccontextmanager
async def store_at(url: str) -> AsyncIterator[UnitOfWork]:
    uow: UnitOfWork
    if url.startswith("sqlite:///"):
        uow = await open_sqlite(url.removeprefix("sqlite:///"))
    else:
        uow = await open_mysql(url)
    try:
        yield uow
    finally:
        await uow.aclose()


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Rows of a statement run behind the port."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            return connection.execute(statement).fetchall()
    connection = raw_mysql(url)
    try:
        cursor = connection.cursor()
        cursor.execute(statement)
        return list(cursor.fetchall())
    finally:
        connection.close()


def kept_ms_of(url: str) -> set[int]:
    """When the entries were kept: their messages' time."""
    return {int(row[0]) for row in query(url, "SELECT created_ms FROM inbox_message")}


def has_offlinemessage(url: str) -> bool:
    if url.startswith("sqlite:///"):
        statement = "SELECT count(*) FROM sqlite_master WHERE name = 'offlinemessage'"
    else:
        statement = (
            "SELECT count(*) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'offlinemessage'"
        )
    return bool(query(url, statement)[0][0])


def look(tx: Transaction) -> dict[int, tuple[object, ...]]:
    return {
        user_id: (
            tx.inbox.after(user_id, 0, 100),
            tx.inbox.last_pos(user_id),
            tx.inbox.oldest_pos(user_id),
            tx.inbox.read_pos(user_id),
            tx.inbox.marks(user_id),
        )
        for user_id in range(1, len(NAMES) + 1)
    }


def expected_inboxes() -> dict[int, tuple[object, ...]]:
    expected: dict[int, tuple[object, ...]] = {}
    for user_id in range(1, len(NAMES) + 1):
        mine = in_order(user_id)
        kept = [Kept(pos, delivery) for pos, delivery in enumerate(mine, start=1)]
        expected[user_id] = (kept, len(mine), 1, 0, {})
    return expected


async def test_db_upgrade_turns_every_waiting_delivery_into_an_inbox_entry_in_order(
    version_1_url: str,
) -> None:
    before = int(time.time() * 1000)
    done = run_cli("db", "upgrade", "--database", version_1_url)
    after = int(time.time() * 1000)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"schema at version {sqlite_schema.LATEST_VERSION}"

    async with store_at(version_1_url) as uow:
        assert await uow.run(look) == expected_inboxes()

        def conversations(tx: Transaction) -> dict[str, list[int]]:
            def msg_ids(kept: list[Kept]) -> list[int]:
                return [k.delivery.msg_id for k in kept]

            return {
                "alice with bob": msg_ids(tx.inbox.conversation(1, peer_id=2, limit=50)),
                "alice with carol": msg_ids(tx.inbox.conversation(1, peer_id=3, limit=50)),
                "alice in group 5": msg_ids(tx.inbox.conversation(1, group_id=5, limit=50)),
                "bob with alice": msg_ids(tx.inbox.conversation(2, peer_id=1, limit=50)),
                "bob in group 5": msg_ids(tx.inbox.conversation(2, group_id=5, limit=50)),
                "carol with herself": msg_ids(tx.inbox.conversation(3, peer_id=3, limit=50)),
            }

        assert await uow.run(conversations) == {
            "alice with bob": [12],
            "alice with carol": [9],
            "alice in group 5": [11],
            "bob with alice": [15],
            "bob in group 5": [10],
            "carol with herself": [14],
        }
        # The next entry follows the migrated ones; a user who had nothing starts at 1.
        new = DirectMessage(99, 4, "dave", 1, "hello", 0)
        assert await uow.run(lambda tx: tx.inbox.append([(1, new), (4, new)], after)) == [5, 1]

    # Version 1's table went once its rows were in the inbox.
    assert not has_offlinemessage(version_1_url)
    kept = kept_ms_of(version_1_url) - {after}
    assert len(kept) >= 1 and all(before <= ms <= after for ms in kept), (before, kept, after)


async def test_upgrading_the_upgraded_database_again_changes_nothing(version_1_url: str) -> None:
    assert run_cli("db", "upgrade", "--database", version_1_url).returncode == 0
    async with store_at(version_1_url) as uow:
        first = await uow.run(look)
    assert run_cli("db", "upgrade", "--database", version_1_url).returncode == 0
    async with store_at(version_1_url) as uow:
        assert await uow.run(look) == first == expected_inboxes()


async def test_a_server_opening_a_version_1_database_migrates_it_the_same_way(
    version_1_url: str,
) -> None:
    """open_sqlite / open_mysql upgrade as they open: a node started on the old file."""
    async with store_at(version_1_url) as uow:
        assert await uow.run(look) == expected_inboxes()
