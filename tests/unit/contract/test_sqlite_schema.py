"""The SQLite adapter's own promises: its schema, its migrations, its connection settings."""

import sqlite3
from functools import partial
from pathlib import Path

import anyio
import pytest

from chatserver.adapters.sqlite import schema
from chatserver.adapters.sqlite.schema import LATEST_VERSION, SchemaTooNew, connect
from chatserver.adapters.sqlite.unit_of_work import SqliteUnitOfWork, open_sqlite, upgrade_sqlite
from chatserver.domain.ports import Transaction
from chatserver.domain.users import User

pytestmark = pytest.mark.anyio

TABLES = {
    "user",
    "friend",
    "friend_request",
    "allgroup",
    "groupuser",
    "message_id_sequence",
    "inbox_message",
    "inbox_head",
    "inbox",
    "inbox_device",
    "userblock",
    "friend_decline",
    "webhook_outbox",
    "webhook_dead",
    "webhook_lease",
    "user_name_key",
    "group_name_key",
    "chat_file",
    "chat_file_ref",
}


def tables_of(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows} - {"sqlite_sequence"}


def user_version_of(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        version: int = connection.execute("PRAGMA user_version").fetchone()[0]
        return version


def test_upgrade_creates_the_schema_at_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    assert upgrade_sqlite(str(path)) == LATEST_VERSION
    assert tables_of(path) == TABLES
    assert user_version_of(path) == LATEST_VERSION


async def test_upgrading_again_changes_nothing_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    uow = await open_sqlite(str(path))
    await uow.run(lambda tx: (tx.users.add("alice", "hash"), tx.message_ids.reserve(5)))
    await uow.aclose()

    assert upgrade_sqlite(path) == LATEST_VERSION
    assert upgrade_sqlite(path) == LATEST_VERSION

    uow = await open_sqlite(path)
    found = await uow.run(lambda tx: (tx.users.get(1), tx.message_ids.reserve(1)))
    await uow.aclose()
    assert found == (User(1, "alice"), 6)


def test_a_later_migration_is_applied_once_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.sqlite3"
    upgrade_sqlite(path)
    later = (
        ("CREATE TABLE later (n INTEGER)", "INSERT INTO later (n) VALUES (1)"),
        ("INSERT INTO later (n) SELECT max(n) + 1 FROM later",),
    )
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + later)
    monkeypatch.setattr(schema, "LATEST_VERSION", LATEST_VERSION + 2)

    assert upgrade_sqlite(path) == LATEST_VERSION + 2
    assert upgrade_sqlite(path) == LATEST_VERSION + 2
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT n FROM later ORDER BY n").fetchall() == [(1,), (2,)]


def test_a_failed_migration_leaves_the_version_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.sqlite3"
    upgrade_sqlite(path)
    broken = ("CREATE TABLE half (n INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(schema, "LATEST_VERSION", LATEST_VERSION + 1)

    with pytest.raises(sqlite3.OperationalError):
        upgrade_sqlite(path)
    assert user_version_of(path) == LATEST_VERSION
    assert "half" not in tables_of(path)


async def test_a_database_from_a_newer_chatserver_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    upgrade_sqlite(path)
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(SchemaTooNew):
        upgrade_sqlite(path)
    with pytest.raises(SchemaTooNew):
        await open_sqlite(path)


def test_connections_use_wal_and_enforce_foreign_keys(tmp_path: Path) -> None:
    connection = connect(tmp_path / "chat.sqlite3")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        connection.close()


def add_and_reserve(name: str, tx: Transaction) -> int:
    tx.users.add(name, "hash")
    return tx.message_ids.reserve(10)


async def test_two_units_of_work_on_one_file_take_turns(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    uows = [await open_sqlite(path), await open_sqlite(path)]
    reserved: list[int] = []

    async def reserve_twenty_times(uow: SqliteUnitOfWork, name: str) -> None:
        for i in range(20):
            reserved.append(await uow.run(partial(add_and_reserve, f"{name} {i}")))

    async with anyio.create_task_group() as tg:
        for name, uow in zip(("first", "second"), uows, strict=True):
            tg.start_soon(reserve_twenty_times, uow, name)
    for uow in uows:
        await uow.aclose()
    assert sorted(reserved) == list(range(1, 400, 10))


async def test_a_closed_unit_of_work_refuses_work(tmp_path: Path) -> None:
    uow = await open_sqlite(tmp_path / "chat.sqlite3")
    await uow.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await uow.run(lambda tx: tx.users.get(1))


async def test_step_4_keeps_every_member_their_role_and_joining_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.sqlite3"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    monkeypatch.setattr(schema, "LATEST_VERSION", 3)
    with connect(path) as connection:
        schema.upgrade(connection)
        connection.executescript(
            """INSERT INTO user (id, name, password) VALUES (1, 'a', 'x'), (2, 'b', 'x'),
                (3, 'c', 'x');
            INSERT INTO allgroup (id, groupname) VALUES (1, 'g');
            INSERT INTO groupuser (seq, groupid, userid, grouprole) VALUES
                (5, 1, 3, 'normal'), (7, 1, 1, 'creator'), (9, 1, 2, 'normal');"""
        )
    monkeypatch.undo()
    assert upgrade_sqlite(path) == LATEST_VERSION
    uow = await open_sqlite(path)
    members = await uow.run(lambda tx: tx.groups.members(1))
    await uow.aclose()
    assert [(m.user.id, m.role.value, m.muted_until) for m in members] == [
        (3, "normal", 0), (1, "creator", 0), (2, "normal", 0)
    ]
