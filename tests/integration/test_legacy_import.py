"""`chatserver db import-legacy`: a database of the original C++ server, imported, then served.

The source is built with the original schema (ORIGINAL.md) in a fresh MariaDB database, with the
untidy rows the original leaves behind; the import is run as the command, and the result is
checked over raw TCP against a real `chatserver serve`, on MySQL and on SQLite.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from chatserver.adapters.mysql.unit_of_work import open_mysql
from chatserver.adapters.sqlite.unit_of_work import open_sqlite
from chatserver.domain.messages import GroupMessage, Kept
from chatserver.domain.ports import Transaction, UnitOfWork
from tests.integration.conftest import Client, ServerProcess, User
from tests.unit.contract.mysql_server import MYSQL

pytestmark = pytest.mark.integration

# The original server's tables, as its course dump declares them.
ORIGINAL_SCHEMA = (
    """CREATE TABLE user (
        id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(50) NOT NULL,
        password VARCHAR(50) NOT NULL,
        state ENUM('online', 'offline') DEFAULT 'offline',
        UNIQUE KEY name (name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE friend (
        userid INT NOT NULL,
        friendid INT NOT NULL,
        KEY userid (userid, friendid)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE allgroup (
        id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        groupname VARCHAR(50) NOT NULL,
        groupdesc VARCHAR(200) DEFAULT '',
        UNIQUE KEY groupname (groupname)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE groupuser (
        groupid INT NOT NULL,
        userid INT NOT NULL,
        grouprole ENUM('creator', 'normal'),
        KEY groupid (groupid, userid)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE offlinemessage (
        userid INT NOT NULL,
        message VARCHAR(500) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
)

ALICE = User(1, "alice", "pw-alice")
BOB = User(2, "bob", "b'ob's pw")
CAROL = User(3, "carol", "密码")
ZHANG = User(5, "张三", "zs")  # ids have a gap: 4 was never used

USERS = [(u.id, u.name, u.password, "offline") for u in (BOB, CAROL, ZHANG)] + [
    (ALICE.id, ALICE.name, ALICE.password, "online"),  # left online by a crash
]
FRIENDS = [
    (1, 2), (2, 1),  # both directions
    (1, 3), (1, 3),  # one direction, twice
    (5, 2),  # one direction
    (2, 99),  # a user that is gone
    (3, 3),  # oneself
]
GROUPS = [(2, "devs", "we write code"), (7, "闲聊", "随便聊, it's fine")]
MEMBERS = [
    (2, 1, "creator"), (2, 2, "normal"), (2, 2, "normal"),
    (7, 3, "creator"), (7, 1, "normal"), (7, 99, "normal"),
]


def chat(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False)


OFFLINE = [
    (2, chat(msgid=6, id=1, name="alice", toid=2, msg="hi bob", time="2024-01-02 03:04:05")),
    (2, chat(msgid=10, groupid=2, id=1, name="alice", msg="it's the group",
             time="2024-01-02 03:05:00")),
    (2, '{"msgid":6,"id":3,"name":"carol","toid":2,"msg":"this was cut sho'),  # truncated
    (3, chat(msgid=6, id=1, name="alice", toid=3, msg="hi carol", time="2024-01-02 03:06:00")),
    (2, chat(msgid=6, id=5, name="张三", toid=2, msg="你好 bob", time="not a time")),
    (99, chat(msgid=6, id=1, name="alice", toid=99, msg="to nobody", time="2024-01-02 03:07:00")),
    (2, "[]"),  # JSON, but not a chat
]

REPORT = (
    "imported 4 users, 3 friendships, 2 groups, 4 memberships and 4 waiting messages;"
    " skipped 4 rows naming a missing user or group or a taken name,"
    " and 2 unreadable stored messages"
)


def local_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp() * 1000)


@pytest.fixture
def legacy_url() -> str:
    """A database of the original server, with the untidy rows it leaves behind."""
    url = MYSQL.new_database()
    user_host, database = url.removeprefix("mysql://").rsplit("/", 1)
    user, host_port = user_host.split("@")
    host, _, port = host_port.partition(":")
    connection = mysql.connector.connect(
        user=user.partition(":")[0], password=user.partition(":")[2], host=host,
        port=int(port or 3306), database=database, charset="utf8mb4",
    )
    cursor = connection.cursor()
    for statement in ORIGINAL_SCHEMA:
        cursor.execute(statement)
    cursor.executemany("INSERT INTO user VALUES (%s, %s, %s, %s)", USERS)
    cursor.executemany("INSERT INTO friend VALUES (%s, %s)", FRIENDS)
    cursor.executemany("INSERT INTO allgroup VALUES (%s, %s, %s)", GROUPS)
    cursor.executemany("INSERT INTO groupuser VALUES (%s, %s, %s)", MEMBERS)
    for row in OFFLINE:  # one at a time: the insertion order is the only order there is
        cursor.execute("INSERT INTO offlinemessage VALUES (%s, %s)", row)
    connection.commit()
    connection.close()
    return url


@pytest.fixture(params=["mysql", "sqlite"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mysql":
        return MYSQL.new_database()
    return f"sqlite:///{tmp_path / 'imported.db'}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )


@pytest.fixture
def imported(legacy_url: str, target_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    done = run_cli("db", "import-legacy", "--from", legacy_url, "--database", target_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == REPORT
    server = ServerProcess(target_url, tmp_path / "server.log").start()
    yield server
    server.stop()
    server.assert_no_traceback()


def login(server: ServerProcess, user: User) -> dict[str, Any]:
    assert server.port is not None
    client = Client(server.port)
    try:
        return client.login(user)
    finally:
        client.close()


def member(user: User, role: str) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "state": "offline", "role": role}


def test_imported_users_log_in_with_their_old_passwords_and_find_everything(
    imported: ServerProcess,
) -> None:
    ack = login(imported, BOB)
    assert ack["name"] == "bob"
    assert [(f["id"], f["name"]) for f in ack["friends"]] == [(1, "alice"), (5, "张三")]
    assert [(g["id"], g["groupname"], g["groupdesc"]) for g in ack["groups"]] == [
        (2, "devs", "we write code")
    ]
    roles = [(u["id"], u["role"]) for u in ack["groups"][0]["users"]]
    assert roles == [(1, "creator"), (2, "normal")]
    waiting = ack["offlinemsg"]
    assert [(m["msgid"], m["id"], m["name"], m["msg"]) for m in waiting] == [
        (6, 1, "alice", "hi bob"),
        (10, 1, "alice", "it's the group"),
        (6, 5, "张三", "你好 bob"),
    ]
    assert [m["ts"] for m in waiting[:2]] == [
        local_ms("2024-01-02 03:04:05"), local_ms("2024-01-02 03:05:00")
    ]
    assert waiting[1]["groupid"] == 2
    assert waiting[0]["msg_id"] < waiting[1]["msg_id"] < waiting[2]["msg_id"]

    ack = login(imported, ALICE)
    assert [(f["id"], f["name"]) for f in ack["friends"]] == [(2, "bob"), (3, "carol")]
    assert {g["id"]: [(u["id"], u["role"]) for u in g["users"]] for g in ack["groups"]} == {
        2: [(1, "creator"), (2, "normal")],
        7: [(3, "creator"), (1, "normal")],
    }
    assert ack["offlinemsg"] == []

    ack = login(imported, CAROL)
    assert [(f["id"], f["name"]) for f in ack["friends"]] == [(1, "alice")]
    assert [m["msg"] for m in ack["offlinemsg"]] == ["hi carol"]
    assert [(g["id"], g["groupname"], g["groupdesc"]) for g in ack["groups"]] == [
        (7, "闲聊", "随便聊, it's fine")
    ]

    ack = login(imported, ZHANG)
    assert [(f["id"], f["name"]) for f in ack["friends"]] == [(2, "bob")]


def test_a_wrong_password_still_fails_and_new_ids_follow_the_imported_ones(
    imported: ServerProcess,
) -> None:
    assert imported.port is not None
    client = Client(imported.port)
    try:
        reply = client.request({"msgid": 1, "id": ALICE.id, "password": "pw-bob"})
        assert reply["errno"] != 0, reply
        reply = client.request({"msgid": 4, "name": "dave", "password": "pw-dave"})
        assert (reply["errno"], reply["id"]) == (0, 6), reply
        client.login(User(6, "dave", "pw-dave"))
        reply = client.ok({"msgid": 8, "groupname": "new group", "groupdesc": ""})
        assert reply["groupid"] == 8
    finally:
        client.close()


def test_importing_into_a_database_that_is_not_empty_is_refused(
    imported: ServerProcess, legacy_url: str, target_url: str
) -> None:
    again = run_cli("db", "import-legacy", "--from", legacy_url, "--database", target_url)
    assert again.returncode == 1
    assert "not empty" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.anyio
async def test_the_waiting_chats_become_each_users_inbox_in_the_order_they_were_stored(
    legacy_url: str, target_url: str
) -> None:
    done = run_cli("db", "import-legacy", "--from", legacy_url, "--database", target_url)
    assert done.returncode == 0, done.stderr
    uow: UnitOfWork
    if target_url.startswith("sqlite:///"):
        uow = await open_sqlite(target_url.removeprefix("sqlite:///"))
    else:
        uow = await open_mysql(target_url)
    try:

        def look(tx: Transaction) -> dict[int, list[tuple[int, str]]]:
            return {
                user.id: [
                    (kept.pos, getattr(kept.delivery, "text", ""))
                    for kept in tx.inbox.after(user.id, 0, 100)
                ]
                for user in (ALICE, BOB, CAROL, ZHANG)
            }

        assert await uow.run(look) == {
            ALICE.id: [],
            BOB.id: [(1, "hi bob"), (2, "it's the group"), (3, "你好 bob")],
            CAROL.id: [(1, "hi carol")],
            ZHANG.id: [],
        }
        group = await uow.run(lambda tx: tx.inbox.conversation(BOB.id, group_id=2, limit=9))
        sent_at = local_ms("2024-01-02 03:05:00")
        msg_id = group[0].delivery.msg_id
        assert group == [Kept(2, GroupMessage(msg_id, 2, 1, "alice", "it's the group", sent_at))]
    finally:
        await uow.aclose()
