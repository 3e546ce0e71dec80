"""Issue 16.10: the schema step that makes names unique by their key (NFKC, case folded) keeps
every existing name working, "Bob" and "bob" both, on SQLite and MariaDB, and `db upgrade` and
`db check-names` report the names that break today's rules."""

from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatserver.adapters.mysql import schema as mysql_schema
from chatserver.adapters.security import ScryptHasher
from chatserver.adapters.sqlite import schema as sqlite_schema
from chatserver.domain.errors import NameTaken
from tests.integration.conftest import Client, ServerProcess
from tests.integration.test_inbox_migration import raw_mysql, run_cli, store_at
from tests.unit.contract.mysql_server import MYSQL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Names an older chatserver let in: two that differ only in case, an NFD copy, a bidi-reversed
# name, a Cyrillic look-alike, a trailing space; and two groups that differ only in case.
OLD_USERS = ["Bob", "bob", "Jose\u0301", "José", "\u202ebob", "\u0430lice", "carol "]
OLD_GROUPS = ["Chess", "chess"]
PASSWORD = "old password"
HASH = anyio.run(ScryptHasher(n=2, r=1, p=1).hash, PASSWORD)


def before_names(migrations: tuple[Any, ...]) -> tuple[Any, ...]:
    """The steps before the one that brings name keys (wherever it is in the list)."""
    for index, step in enumerate(migrations):
        if any(isinstance(s, str) and "user_name_key" in s for s in step):
            return migrations[:index]
    raise AssertionError("no step creates user_name_key")


def sqlite_before(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_schema, "MIGRATIONS", before_names(sqlite_schema.MIGRATIONS))
        patched.setattr(sqlite_schema, "LATEST_VERSION", len(sqlite_schema.MIGRATIONS))
        with closing(sqlite_schema.connect(path)) as connection:
            sqlite_schema.upgrade(connection)
            for name in OLD_USERS:
                connection.execute("INSERT INTO user (name, password) VALUES (?, ?)", (name, HASH))
            for name in OLD_GROUPS:
                connection.execute("INSERT INTO allgroup (groupname) VALUES (?)", (name,))


def mysql_before(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(mysql_schema, "MIGRATIONS", before_names(mysql_schema.MIGRATIONS))
        patched.setattr(mysql_schema, "LATEST_VERSION", len(mysql_schema.MIGRATIONS))
        mysql_schema.upgrade(raw_mysql(url))
    connection = raw_mysql(url)
    try:
        cursor = connection.cursor()
        for i, name in enumerate(OLD_USERS, start=1):
            cursor.execute(
                "INSERT INTO user (id, name, password) VALUES (%s, %s, %s)", (i, name, HASH)
            )
        for i, name in enumerate(OLD_GROUPS, start=1):
            cursor.execute("INSERT INTO allgroup (id, groupname) VALUES (%s, %s)", (i, name))
        cursor.execute("UPDATE id_sequence SET next = 100")
        connection.commit()
    finally:
        connection.close()


@pytest.fixture(params=["sqlite", "mysql"])
def old_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite3"
        sqlite_before(path, monkeypatch)
        return f"sqlite:///{path}"
    url = MYSQL.new_database()
    mysql_before(url, monkeypatch)
    return url


async def test_the_upgrade_keeps_every_old_name_and_reports_those_that_break_the_rules(
    old_url: str,
) -> None:
    upgraded = run_cli("db", "upgrade", "--database", old_url)
    assert upgraded.returncode == 0, upgraded.stderr
    print(upgraded.stdout)
    assert "7 names break today's rules and keep working" in upgraded.stdout
    checked = run_cli("db", "check-names", "--database", old_url)
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert lines[-1] == "7 names break today's rules (they keep working)"
    assert lines[:-1] == [
        "user 2 'bob': name differs only in case, form or look-alike letters from an earlier"
        " one",
        "user 3 'Jose\u0301': name must be in Unicode NFKC form (no decomposed accents, no"
        " full-width letters): try 'Jos\u00e9'",
        "user 4 'José': name differs only in case, form or look-alike letters from an earlier"
        " one",
        "user 5 '\\u202ebob': name must not contain control, format (bidi, zero-width) or"
        " unassigned characters",
        "user 6 'аlice': name must not mix scripts with look-alike letters (such as a Cyrillic"
        " or Greek letter among Latin ones)",
        "user 7 'carol ': name must not begin or end with a space",
        "group 2 'chess': groupname differs only in case, form or look-alike letters from an"
        " earlier one",
    ]
    async with store_at(old_url) as uow:
        # Every old name is still found exactly, so LOGIN by name works for each.
        for name in OLD_USERS:
            account = await uow.run(lambda tx, name=name: tx.users.account_by_name(name))
            assert account is not None and account.user.name == name
        # A new name is unique by its key: "BOB" is taken (by "Bob"), also "CHESS"; a free
        # name registers.
        for taken in ["BOB", "bob", "JOSÉ"]:
            with pytest.raises(NameTaken):
                await uow.run(lambda tx, taken=taken: tx.users.add(taken, "x"))
        with pytest.raises(NameTaken):
            await uow.run(lambda tx: tx.groups.create("CHESS", "", 1))
        dave = await uow.run(lambda tx: tx.users.add("Dave", "x"))
        assert dave.name == "Dave"
        # A group without its key (a duplicate) may be renamed, and then has one.
        renamed = await uow.run(lambda tx: tx.groups.update(2, "Chess club", None))
        assert renamed.name == "Chess club"
        names = await uow.run(lambda tx: tx.groups.names())
        assert [(n.name, n.keyed) for n in names] == [("Chess", True), ("Chess club", True)]


def test_every_old_name_still_logs_in_by_name_after_the_upgrade(
    old_url: str, tmp_path: Path
) -> None:
    """Over the wire: "Bob" and "bob" (one key), the NFD and the bidi name all log in."""
    server = ServerProcess(old_url, tmp_path / "server.log").start()
    try:
        assert server.port is not None
        client = Client(server.port)
        for user_id, name in enumerate(OLD_USERS, start=1):
            reply = client.request({"msgid": 1, "name": name, "password": PASSWORD})
            assert reply["errno"] == 0 and reply["id"] == user_id, (name, reply)
        reply = client.request({"msgid": 4, "name": "BOB", "password": "pw"})
        assert reply["errno"] == 1, reply
        client.close()
    finally:
        server.stop()
        server.assert_no_traceback()


# Keyed before look-alikes shared a key: "scope", then "ѕсоре" all in Cyrillic, then "Scope".
LOOK_ALIKE_USERS = ["scope", "\u0455\u0441\u043e\u0440\u0435"]


def _before_rekey(migrations: tuple[Any, ...], step: Any) -> tuple[Any, ...]:
    return migrations[: migrations.index(step)]


def _old_key(name: str) -> str:
    """The key before the look-alike step: NFKC with case folded."""
    import unicodedata

    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


@pytest.fixture(params=["sqlite", "mysql"])
def look_alike_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    if request.param == "sqlite":
        path = tmp_path / "keys.sqlite3"
        with monkeypatch.context() as patched:
            steps = _before_rekey(sqlite_schema.MIGRATIONS, sqlite_schema.REKEY_NAMES)
            patched.setattr(sqlite_schema, "MIGRATIONS", steps)
            patched.setattr(sqlite_schema, "LATEST_VERSION", len(steps))
            with closing(sqlite_schema.connect(path)) as connection:
                sqlite_schema.upgrade(connection)
                for name in LOOK_ALIKE_USERS:
                    row = connection.execute(
                        "INSERT INTO user (name, password) VALUES (?, ?)", (name, HASH))
                    connection.execute(
                        "INSERT INTO user_name_key (name_key, userid) VALUES (?, ?)",
                        (_old_key(name), row.lastrowid))
                connection.commit()
        return f"sqlite:///{path}"
    url = MYSQL.new_database()
    with monkeypatch.context() as patched:
        steps = _before_rekey(mysql_schema.MIGRATIONS, mysql_schema.REKEY_NAMES)
        patched.setattr(mysql_schema, "MIGRATIONS", steps)
        patched.setattr(mysql_schema, "LATEST_VERSION", len(steps))
        mysql_schema.upgrade(raw_mysql(url))
    connection = raw_mysql(url)
    try:
        cursor = connection.cursor()
        for i, name in enumerate(LOOK_ALIKE_USERS, start=1):
            cursor.execute(
                "INSERT INTO user (id, name, password) VALUES (%s, %s, %s)", (i, name, HASH))
            cursor.execute("INSERT INTO user_name_key (name_key, userid) VALUES (%s, %s)",
                           (_old_key(name), i))
        cursor.execute("UPDATE id_sequence SET next = 100")
        connection.commit()
    finally:
        connection.close()
    return url


async def test_the_look_alike_step_rekeys_names_and_keeps_both_working(
    look_alike_url: str,
) -> None:
    """Issue 16.10: "scope" and the all-Cyrillic "ѕсоре" both registered before names were
    keyed by their skeleton. After the step the earlier keeps its key, the later works
    without one and is reported; a third look-alike is refused."""
    upgraded = run_cli("db", "upgrade", "--database", look_alike_url)
    assert upgraded.returncode == 0, upgraded.stderr
    checked = run_cli("db", "check-names", "--database", look_alike_url)
    print(checked.stdout)
    assert checked.stdout.splitlines()[:-1] == [
        "user 2 '\u0455\u0441\u043e\u0440\u0435': name differs only in case, form or look-alike"
        " letters from an earlier one",
    ]
    async with store_at(look_alike_url) as uow:
        for name in LOOK_ALIKE_USERS:
            account = await uow.run(lambda tx, name=name: tx.users.account_by_name(name))
            assert account is not None and account.user.name == name
        for taken in ["SCOPE", "\u0455c\u043e\u0440\u0435"]:
            with pytest.raises(NameTaken):
                await uow.run(lambda tx, taken=taken: tx.users.add(taken, "x"))
