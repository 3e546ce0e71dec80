"""`chatserver admin` as an operator runs it: a subprocess against SQLite and MariaDB, and
against a running 2-node cluster (serve processes on a Redis bus), where a suspension ends the
user's sessions on both nodes."""

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatserver.application.commands import (
    AddFriend,
    AnswerFriend,
    BlockUser,
    CreateGroup,
    JoinGroup,
    Login,
    Register,
    SendDirectMessage,
)
from chatserver.application.results import GroupCreated, LoggedIn, Registered
from chatserver.domain.errors import InvalidCredentials, NotPermitted
from chatserver.entrypoints.bootstrap import Config, bootstrap
from tests.integration.conftest import Chat, ServerProcess, chats_on, same
from tests.unit.conftest import FAST_HASHER
from tests.unit.contract.mysql_server import MYSQL

pytestmark = pytest.mark.integration

REDIS = "redis://127.0.0.1:6379/0"


def admin(*args: str, stdin: str = "", bus: str = "memory://") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", "admin", *args, "--bus", bus],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def admin_json(database: str, *args: str, stdin: str = "", bus: str = "memory://") -> Any:
    done = admin(*args, "--database", database, "--json", stdin=stdin, bus=bus)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(params=["sqlite", "mysql"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database to act on and an empty one to import into."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chat.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    else:
        yield MYSQL.new_database(), MYSQL.new_database()


async def populate(database: str) -> dict[str, int]:
    """alice and bob are friends in alice's group; alice blocks carol; alice wrote to bob; bob
    declined carol's friend request, and his own to carol waits."""
    async with bootstrap(Config(database=database, node_id="setup"), hasher=FAST_HASHER) as app:
        ids = {}
        for name in ("alice", "bob", "carol"):
            registered = await app.connect().request(Register(name, "pw"))
            assert isinstance(registered, Registered)
            ids[name] = registered.user_id
        a, b = app.connect(), app.connect()
        await a.request(Login("pw", ids["alice"]))
        await b.request(Login("pw", ids["bob"]))
        await a.request(AddFriend(ids["bob"]))
        await b.request(AnswerFriend(ids["alice"], accept=True))
        group = await a.request(CreateGroup("team", "the team"))
        assert isinstance(group, GroupCreated)
        await b.request(JoinGroup(group.group_id))
        await a.request(BlockUser(ids["carol"], block=True))
        await a.request(SendDirectMessage(ids["bob"], "hello bob"))
        c = app.connect()
        await c.request(Login("pw", ids["carol"]))
        await c.request(AddFriend(ids["bob"]))
        await b.request(AnswerFriend(ids["carol"], accept=False))
        await b.request(AddFriend(ids["carol"]))
        ids["team"] = group.group_id
        return ids


async def can_login(database: str, user_id: int, password: str) -> bool | str:
    async with bootstrap(Config(database=database, node_id="check"), hasher=FAST_HASHER) as app:
        try:
            result = await app.connect().request(Login(password, user_id))
        except (InvalidCredentials, NotPermitted) as error:
            return error.message
        return isinstance(result, LoggedIn)


def test_the_admin_command_on_a_database(databases: tuple[str, str], tmp_path: Path) -> None:
    db, other = databases
    ids = anyio.run(populate, db)
    alice, bob, carol = ids["alice"], ids["bob"], ids["carol"]

    listed = admin_json(db, "users", "list")
    assert [(u["id"], u["name"], u["online"]) for u in listed] == [
        (alice, "alice", []),
        (bob, "bob", []),
        (carol, "carol", []),
    ]
    table = admin("users", "list", "--database", db)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == [
        "ID",
        "NAME",
        "SUSPENDED_UNTIL",
        "ONLINE",
    ]
    shown = admin_json(db, "users", "show", "alice")
    assert shown["friends"] == [{"id": bob, "name": "bob"}]
    assert [(g["name"], g["role"]) for g in shown["groups"]] == [("team", "creator")]
    assert shown["blocks"] == [carol]
    assert "password_hash" not in shown["user"]
    shown = admin_json(db, "users", "show", "bob")
    assert (shown["requests_from"], shown["requests_to"]) == ([], [carol])
    assert [(d["requester"], d["addressee"]) for d in shown["declines"]] == [(carol, bob)]
    assert admin_json(db, "users", "show", "carol")["requests_from"] == [bob]

    suspended = admin_json(db, "users", "suspend", str(alice), "--until", "2h")
    assert suspended["suspended"] == alice and suspended["sessions_ended"] == 0
    refused = anyio.run(can_login, db, alice, "pw")
    assert isinstance(refused, str) and refused.startswith("this account is suspended until")
    assert admin_json(db, "users", "show", "alice")["user"]["suspended_until"].endswith("Z")
    admin_json(db, "users", "unsuspend", "alice")
    assert anyio.run(can_login, db, alice, "pw") is True

    # The password comes from stdin (not a terminal here), never from the command line.
    admin_json(db, "users", "reset-password", "alice", stdin="brand new\n")
    assert anyio.run(can_login, db, alice, "brand new") is True
    assert anyio.run(can_login, db, alice, "pw") != True  # noqa: E712
    assert admin("users", "reset-password", "alice", "--database", db).returncode != 0

    # Export every account, import them into an empty database: the same documents come out.
    exported = {uid: admin_json(db, "users", "export", str(uid)) for uid in (alice, bob, carol)}
    assert any(m.get("text") == "hello bob" for m in exported[bob]["messages"])
    assert exported[alice]["user"]["password_hash"].startswith("scrypt$")
    for uid, document in exported.items():
        path = tmp_path / f"{uid}.json"
        path.write_text(json.dumps(document))
        assert admin_json(other, "users", "import", str(path)) == {"imported": uid}
    for uid, document in exported.items():
        assert admin_json(other, "users", "export", str(uid)) == document
    assert exported[carol]["declines"] == exported[bob]["declines"] != []
    again = admin("users", "import", str(tmp_path / f"{alice}.json"), "--database", other)
    assert again.returncode == 1 and "taken" in again.stderr

    groups = admin_json(db, "groups", "list")
    assert [(g["id"], g["name"], [m["role"] for m in g["members"]]) for g in groups] == [
        (ids["team"], "team", ["creator", "normal"]),
    ]
    assert admin_json(db, "groups", "show", str(ids["team"]))["description"] == "the team"
    assert admin_json(db, "groups", "dissolve", str(ids["team"])) == {
        "dissolved": ids["team"],
        "members": 2,
    }
    assert admin_json(db, "groups", "list") == []

    assert admin_json(db, "users", "delete", "bob") == {"deleted": bob}
    gone = admin("users", "show", str(bob), "--database", db)
    assert gone.returncode == 1 and "no user" in gone.stderr
    assert admin_json(db, "users", "show", "alice")["friends"] == []
    assert [u["name"] for u in admin_json(db, "users", "list")] == ["alice", "carol"]


# --------------------------------------------------------------------------- a running cluster


@pytest.fixture
def bus() -> str:
    return f"{REDIS}?namespace=test-{secrets.token_hex(4)}"


@pytest.fixture
def cluster(tmp_path: Path, bus: str) -> Iterator[tuple[Chat, Chat, str]]:
    database = f"sqlite:///{tmp_path / 'cluster.db'}"
    servers = [
        ServerProcess(database, tmp_path / f"{name}.log", ["--bus", bus, "--node-id", name])
        for name in ("a", "b")
    ]
    with chats_on(*(s.start() for s in servers)) as (on_a, on_b):
        yield on_a, on_b, database


def test_suspending_a_user_ends_their_sessions_on_both_nodes(
    cluster: tuple[Chat, Chat, str], bus: str
) -> None:
    on_a, on_b, database = cluster
    alice, bob = on_a.users(2)
    pc = on_a.client()
    pc.login(alice, device="pc")
    phone = on_b.client()
    phone.login(alice, device="phone")
    bystander = on_b.online(bob)
    listed = admin_json(database, "users", "list", "--online", bus=bus)
    assert {(u["name"], tuple(u["online"])) for u in listed} == {
        (alice.name, ("pc", "phone")),
        (bob.name, ("default",)),
    }

    started = time.monotonic()
    done = admin_json(database, "users", "suspend", alice.name, "--until", "1d", bus=bus)
    took = time.monotonic() - started
    assert done["sessions_ended"] == 2
    for client in (pc, phone):
        kicked = client.expect({"msgid": 15})
        assert kicked["errmsg"].startswith("this account is suspended until")
    # Neither session is logged in any more, on either node.
    for client in (pc, phone):
        reply = client.request({"msgid": 6, "toid": bob.id, "msg": "still here?"})
        assert same(reply["errno"], 3), reply
    for chat in (on_a, on_b):
        c = chat.client()
        reply = c.request({"msgid": 1, "id": alice.id, "password": alice.password})
        assert same(reply["errno"], 12) and "suspended until" in reply["errmsg"], reply
    # bob on the same node keeps his service
    t0 = time.monotonic()
    bystander.ok({"msgid": 6, "toid": bob.id, "msg": "note to self"})
    print(
        f"admin suspend took {took:.2f} s (a process start included); "
        f"bob's chat after it {1000 * (time.monotonic() - t0):.1f} ms"
    )

    admin_json(database, "users", "unsuspend", str(alice.id), bus=bus)
    on_b.client().login(alice, device="phone")


def test_deleting_a_user_ends_their_sessions_on_both_nodes_and_tells_their_friend(
    cluster: tuple[Chat, Chat, str], bus: str
) -> None:
    on_a, on_b, database = cluster
    alice, bob = on_a.users(2)
    pc = on_a.client()
    pc.login(alice, device="pc")
    friend = on_b.online(bob)
    on_a.befriend(pc, friend)
    phone = on_b.client()
    phone.login(alice, device="phone")
    assert admin_json(database, "users", "delete", str(alice.id), bus=bus) == {"deleted": alice.id}
    for client in (pc, phone):
        assert client.expect({"msgid": 15})["errmsg"] == "the account was deleted"
    assert friend.expect({"msgid": 31}) == {"msgid": 31, "id": alice.id}
    friend.err({"msgid": 6, "toid": alice.id, "msg": "hello?"}, 4)
    assert on_b.register(alice.name, "a newcomer") != alice.id


def test_the_operator_lists_retries_and_drops_webhook_dead_letters(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'chat.db'}"

    async def set_aside() -> None:
        async with bootstrap(Config(database=database), hasher=FAST_HASHER) as app:
            bodies = [("users:1:2", '{"event_id":"a"}'), ("group:3", '{"event_id":"b"}')]
            await app.node.uow.run(lambda tx: tx.webhooks.add(bodies, 1_000))
            rows = await app.node.uow.run(lambda tx: tx.webhooks.pending(10))

            def bury(tx: Any) -> None:
                for row in rows:
                    tx.webhooks.bury(row, 2_000, "refused 5 times (last: HTTP 400)")

            await app.node.uow.run(bury)

    anyio.run(set_aside)
    dead = admin_json(database, "webhooks", "dead")
    assert [(d["conversation"], d["body"], d["reason"]) for d in dead] == [
        ("users:1:2", '{"event_id":"a"}', "refused 5 times (last: HTTP 400)"),
        ("group:3", '{"event_id":"b"}', "refused 5 times (last: HTTP 400)"),
    ]
    assert admin_json(database, "webhooks", "retry", str(dead[0]["id"])) == {"retried": 1}
    assert admin_json(database, "webhooks", "drop", "--all") == {"dropped": 1}
    assert admin_json(database, "webhooks", "dead") == []
    refused = admin("webhooks", "retry", "--database", database)
    assert refused.returncode == 2 and "one of the arguments ID --all is required" in refused.stderr

    async def waiting() -> list[str]:
        async with bootstrap(Config(database=database), hasher=FAST_HASHER) as app:
            rows = await app.node.uow.run(lambda tx: tx.webhooks.pending(10))
            return [row.body for row in rows]

    assert anyio.run(waiting) == ['{"event_id":"a"}']
