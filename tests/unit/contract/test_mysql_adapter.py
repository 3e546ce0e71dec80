"""The MySQL adapter's own promises: its schema, utf8mb4 end to end, its pool under stress.

Each test gets a database of its own on the MariaDB of mysql_server.py.
"""

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import mysql.connector
import pytest

from chatserver.adapters.mysql import unit_of_work
from chatserver.adapters.mysql.schema import LATEST_VERSION, SchemaTooNew
from chatserver.adapters.mysql.unit_of_work import (
    MySqlTransaction,
    MySqlUnitOfWork,
    open_mysql,
    upgrade_mysql,
)
from chatserver.adapters.mysql.url import InvalidMySqlUrl, parse_mysql_url, redact_password
from chatserver.domain.errors import Unavailable
from chatserver.domain.messages import Delivery, DirectMessage, FriendAnswer, GroupMessage
from chatserver.domain.ports import Transaction
from chatserver.domain.users import Account, User

from .mysql_server import MYSQL

pytestmark = pytest.mark.anyio

TABLES = {
    "schema_version",
    "user",
    "friend",
    "friend_request",
    "allgroup",
    "groupuser",
    "groupmute",
    "userblock",
    "friend_decline",
    "webhook_outbox",
    "webhook_dead",
    "webhook_lease",
    "user_name_key",
    "group_name_key",
    "chat_file",
    "chat_file_ref",
    "message_id_sequence",
    "id_sequence",
    "inbox_message",
    "inbox_head",
    "inbox",
    "inbox_device",
}
CHINESE_AND_EMOJI = "你好，世界 😀👩‍👩‍👧 𠜎"


@pytest.fixture
def url() -> str:
    return MYSQL.new_database()


@pytest.fixture
async def mysql_uow(url: str) -> AsyncIterator[MySqlUnitOfWork[MySqlTransaction]]:
    uow = await open_mysql(url, pool_size=2)
    yield uow
    await uow.aclose()


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def connections_to(url: str) -> list[int]:
    rows = MYSQL.execute(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", (database_of(url),)
    )
    return [int(row[0]) for row in rows]


def connections_left(url: str, within: float = 5.0) -> list[int]:
    """The connections still open after waiting up to within seconds for closed ones to go:
    MariaDB drops a closed connection from its process list a moment after the client quits,
    and on a loaded machine that moment can be long."""
    deadline = time.monotonic() + within
    while (left := connections_to(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --------------------------------------------------------------------------- URLs


def test_urls_name_user_password_host_port_and_database() -> None:
    where = parse_mysql_url("mysql://chat:p%40ss@db.example:3307/chat")
    assert (where.user, where.password, where.host, where.port, where.database) == (
        "chat", "p@ss", "db.example", 3307, "chat"
    )
    assert parse_mysql_url("mysql://root@127.0.0.1/chat").port == 3306
    assert parse_mysql_url("mysql://root@127.0.0.1/chat").password == ""


@pytest.mark.parametrize(
    "bad",
    ["mysql://127.0.0.1/chat", "mysql://root@127.0.0.1", "mysql://root@127.0.0.1:x/chat",
     "postgres://root@h/chat", "mysql://root@h/a/b"],
)
def test_urls_missing_a_part_are_refused(bad: str) -> None:
    with pytest.raises(InvalidMySqlUrl):
        parse_mysql_url(bad)


def test_passwords_never_show() -> None:
    url = "mysql://chat:s3cret@db:3306/chat"
    assert redact_password(url) == "mysql://chat:***@db:3306/chat"
    assert redact_password("mysql://chat@db/chat") == "mysql://chat@db/chat"
    assert "s3cret" not in repr(parse_mysql_url(url))
    with pytest.raises(InvalidMySqlUrl) as raised:
        parse_mysql_url("mysql://chat:s3cret@db:3306")
    assert "s3cret" not in str(raised.value)


# --------------------------------------------------------------------------- schema


def test_upgrade_creates_innodb_utf8mb4_tables_that_compare_exactly(url: str) -> None:
    assert upgrade_mysql(url) == LATEST_VERSION
    rows = MYSQL.execute(
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s",
        (database_of(url),),
    )
    assert {row[0] for row in rows} == TABLES
    assert {(row[1], row[2]) for row in rows} == {("InnoDB", "utf8mb4_nopad_bin")}
    columns = MYSQL.execute(
        "SELECT DISTINCT CHARACTER_SET_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND CHARACTER_SET_NAME IS NOT NULL",
        (database_of(url),),
    )
    assert columns == [("utf8mb4",)]


def test_upgrading_again_and_at_once_from_many_processes_is_safe(url: str) -> None:
    versions: list[int] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            versions.append(upgrade_mysql(url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert versions == [LATEST_VERSION] * 4
    assert upgrade_mysql(url) == LATEST_VERSION


async def test_upgrading_keeps_the_data(url: str) -> None:
    uow = await open_mysql(url)
    await uow.run(lambda tx: (tx.users.add("alice", "hash"), tx.message_ids.reserve(5)))
    await uow.aclose()
    assert upgrade_mysql(url) == LATEST_VERSION
    uow = await open_mysql(url)
    found = await uow.run(lambda tx: (tx.users.get(1), tx.message_ids.reserve(1)))
    await uow.aclose()
    assert found == (User(1, "alice"), 6)


async def test_a_schema_from_a_newer_chatserver_is_refused(url: str) -> None:
    upgrade_mysql(url)
    MYSQL.execute(f"UPDATE `{database_of(url)}`.schema_version SET version = 999")
    with pytest.raises(SchemaTooNew):
        await open_mysql(url)


# --------------------------------------------------------------------------- text


async def test_chinese_and_emoji_round_trip_through_every_text_column(
    mysql_uow: MySqlUnitOfWork[MySqlTransaction], url: str
) -> None:
    uow = mysql_uow
    text = CHINESE_AND_EMOJI
    deliveries: list[Delivery] = [
        DirectMessage(1, 2, f"{text}2", 1, text, 0),
        GroupMessage(2, 1, 2, f"{text}2", text, 0),
        FriendAnswer(3, 2, f"{text}2", accepted=True),
    ]

    def store(tx: Transaction) -> None:
        tx.users.add(f"{text}1", f"hash {text}")
        tx.users.add(f"{text}2", "hash")
        tx.groups.create(f"group {text}", f"about {text}", 1)
        tx.inbox.append([(1, delivery) for delivery in deliveries], 0)

    def look(tx: Transaction) -> tuple[object, ...]:
        return (
            tx.users.account_by_name(f"{text}1"),
            tx.groups.groups_of(1)[0].name,
            tx.groups.groups_of(1)[0].description,
            [kept.delivery for kept in tx.inbox.after(1, 0, 10)],
        )

    await uow.run(store)
    assert await uow.run(look) == (
        Account(User(1, f"{text}1"), f"hash {text}"),
        f"group {text}",
        f"about {text}",
        deliveries,
    )
    # Stored as UTF-8 (4 bytes for an emoji), not mangled on the way in and back out.
    database = database_of(url)
    assert MYSQL.execute(f"SELECT HEX(name) FROM `{database}`.user WHERE id = 1") == [
        (f"{text}1".encode().hex().upper(),)
    ]
    assert MYSQL.execute(f"SELECT HEX(groupdesc) FROM `{database}`.allgroup") == [
        (f"about {text}".encode().hex().upper(),)
    ]


# --------------------------------------------------------------------------- the pool


async def test_pool_sizes_beyond_the_drivers_limit_are_refused(url: str) -> None:
    for size in (0, 33):
        with pytest.raises(ValueError):
            await open_mysql(url, pool_size=size)


async def test_an_unreachable_server_is_unavailable_and_says_where_without_the_password() -> None:
    with anyio.fail_after(10), pytest.raises(Unavailable) as raised:
        await open_mysql("mysql://root:s3cret@127.0.0.1:1/chat")
    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in str(raised.value)


async def test_fifty_runs_at_once_queue_for_a_pool_of_eight(url: str) -> None:
    uow = await open_mysql(url, pool_size=8)
    results: list[int] = []

    async def one(i: int) -> None:
        def work(tx: Transaction) -> int:
            user = tx.users.add(f"user {i}", "hash")
            first = tx.message_ids.reserve(1)
            tx.inbox.append([(user.id, DirectMessage(first, 1, "x", user.id, "hi", 0))], 0)
            return user.id

        results.append(await uow.run(work))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
        assert sorted(results) == list(range(1, 51))
        assert 1 <= len(connections_to(url)) <= 8  # never more than the pool
    finally:
        await uow.aclose()
    assert connections_left(url) == []


async def test_waiting_too_long_for_a_free_connection_is_unavailable(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unit_of_work, "POOL_WAIT_SECONDS", 0.2)
    uow = await open_mysql(url, pool_size=1)
    release = threading.Event()

    def hold_the_connection(tx: Transaction) -> None:
        tx.users.get(1)
        release.wait(10)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(uow.run, hold_the_connection)
            await anyio.sleep(0.05)
            with anyio.fail_after(5), pytest.raises(Unavailable):
                await uow.run(lambda tx: tx.users.get(1))
            release.set()
        assert await uow.run(lambda tx: tx.users.get(1)) is None
    finally:
        release.set()
        await uow.aclose()


@pytest.fixture
def row_lock(url: str) -> Iterator[Any]:
    """Holds the lock that adding a user waits for, on a connection of its own."""
    upgrade_mysql(url)
    holder = parse_mysql_url(url)
    connection = mysql.connector.connect(
        user=holder.user, password=holder.password, host=holder.host, port=holder.port,
        database=holder.database, autocommit=False, buffered=True,
    )
    cursor = connection.cursor()
    cursor.execute("SELECT next FROM id_sequence WHERE tablename = 'user' FOR UPDATE")
    cursor.fetchall()
    yield connection
    connection.rollback()
    connection.close()


async def test_a_connection_killed_mid_request_is_unavailable_and_the_pool_recovers(
    url: str, row_lock: Any
) -> None:
    uow = await open_mysql(url, pool_size=1)
    outcome: list[BaseException] = []

    async def add_user() -> None:
        try:
            await uow.run(lambda tx: tx.users.add("alice", "hash"))
        except BaseException as error:
            outcome.append(error)

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(add_user)
                victim = await waiting_for_the_lock(url)
                MYSQL.execute(f"KILL CONNECTION {victim:d}")
        assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
        # The killed transaction left nothing; the lock holder lets go; the pool reconnects.
        row_lock.rollback()
        with anyio.fail_after(10):
            assert await uow.run(lambda tx: tx.users.add("bob", "hash")) == User(1, "bob")
    finally:
        await uow.aclose()


async def waiting_for_the_lock(url: str) -> int:
    while True:
        rows = MYSQL.execute(
            "SELECT ID FROM information_schema.PROCESSLIST"
            " WHERE DB = %s AND INFO LIKE %s",
            (database_of(url), "SELECT next FROM id_sequence%"),
        )
        if rows:
            return int(rows[0][0])
        await anyio.sleep(0.02)


async def test_a_connection_killed_while_idle_is_opened_again_unnoticed(url: str) -> None:
    uow = await open_mysql(url, pool_size=1)
    try:
        await uow.run(lambda tx: tx.users.add("alice", "hash"))
        (victim,) = connections_to(url)
        MYSQL.execute(f"KILL CONNECTION {victim:d}")
        with anyio.fail_after(10):
            assert await uow.run(lambda tx: tx.users.get(1)) == User(1, "alice")
        assert connections_to(url) != [victim]
    finally:
        await uow.aclose()


async def test_a_closed_unit_of_work_closes_its_connections_and_refuses_work(url: str) -> None:
    uow = await open_mysql(url, pool_size=4)
    await uow.run(lambda tx: tx.users.add("alice", "hash"))
    assert len(connections_to(url)) == 1
    await uow.aclose()
    await uow.aclose()
    assert connections_left(url) == []
    with pytest.raises(anyio.ClosedResourceError):
        await uow.run(lambda tx: tx.users.get(1))
