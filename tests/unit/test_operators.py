"""An operator's actions (`chatserver admin`) and ACCOUNT delete, on in-memory nodes:
suspension, password reset, deletion, export and import, dissolving a group."""

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from attrs import evolve

from chatserver.adapters.memory.cluster import InProcessHub
from chatserver.application import operators
from chatserver.application.account_changes import delete_account
from chatserver.application.accounts import suspension_message
from chatserver.application.commands import (
    AccountChange,
    AddFriend,
    AnswerFriend,
    BlockUser,
    CreateGroup,
    JoinGroup,
    Login,
    SendDirectMessage,
    SendGroupMessage,
    Sync,
)
from chatserver.application.node import Limits
from chatserver.application.results import (
    Done,
    GroupCreated,
    LoggedIn,
    MessageAccepted,
    Synced,
)
from chatserver.domain.errors import (
    InvalidCredentials,
    NotLoggedIn,
    NotPermitted,
    RateLimited,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.groups import Role
from chatserver.domain.messages import (
    DirectMessage,
    FriendRemovedNotice,
    GroupEvent,
    GroupMessage,
    KickedNotice,
)
from chatserver.domain.users import DELETED_USER_NAME, INDEFINITELY_MS
from chatserver.entrypoints.admin import parse_until
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER
from tests.unit.test_use_cases import online, register, unwrap

pytestmark = pytest.mark.anyio


async def device(chat: ChatApp, user_id: int, name: str) -> EmbeddedClient:
    client = chat.connect()
    assert isinstance(await client.request(Login("pw", user_id=user_id, device=name)), LoggedIn)
    return client


async def befriend(a: EmbeddedClient, b: EmbeddedClient, b_id: int, a_id: int) -> None:
    await a.request(AddFriend(b_id))
    await b.request(AnswerFriend(a_id, accept=True))
    a.outbox.events.clear()
    b.outbox.events.clear()


async def events_until_kicked(client: EmbeddedClient) -> KickedNotice:
    with anyio.fail_after(5):
        while True:
            event = unwrap(await client.next_event())
            if isinstance(event, KickedNotice):
                return event


# --------------------------------------------------------------------------- suspension


async def test_a_suspended_users_sessions_end_and_their_login_is_refused_saying_until_when(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    a, a_phone = await online(chat, alice), await device(chat, alice, "phone")
    until = chat.node.clock.now_ms() + 3_600_000
    assert await operators.suspend_user(alice, until, node=chat.node) == 2
    for client in (a, a_phone):
        kicked = await events_until_kicked(client)
        assert kicked.reason == suspension_message(until)
        with pytest.raises(NotLoggedIn):
            await client.request(SendDirectMessage(alice, "still here?"))
    with pytest.raises(NotPermitted) as refused:
        await chat.connect().request(Login("pw", user_id=alice))
    assert "suspended until" in refused.value.message
    # A wrong password is still errno 1: a stranger learns nothing of the suspension.
    with pytest.raises(InvalidCredentials):
        await chat.connect().request(Login("wrong", user_id=alice))
    await operators.unsuspend_user(alice, node=chat.node)
    assert isinstance(await chat.connect().request(Login("pw", user_id=alice)), LoggedIn)


async def test_a_suspension_ends_by_itself_when_its_time_passes(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    await operators.suspend_user(alice, chat.node.clock.now_ms() + 200, node=chat.node)
    with pytest.raises(NotPermitted):
        await chat.connect().request(Login("pw", user_id=alice))
    await anyio.sleep(0.25)
    assert isinstance(await chat.connect().request(Login("pw", user_id=alice)), LoggedIn)


async def test_an_indefinite_suspension_says_so(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    await operators.suspend_user(alice, INDEFINITELY_MS, node=chat.node)
    with pytest.raises(NotPermitted) as refused:
        await chat.connect().request(Login("pw", name="alice"))
    assert refused.value.message == "this account is suspended"
    with pytest.raises(UnknownUser):
        await operators.suspend_user(999, INDEFINITELY_MS, node=chat.node)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[ChatApp, ChatApp, ChatApp]]:
    """Two serving nodes and an operator's node on one database and one hub."""
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    hub = InProcessHub()
    async with (
        bootstrap(Config(database=url, node_id="a"), hub=hub, hasher=FAST_HASHER) as a,
        bootstrap(Config(database=url, node_id="b"), hub=hub, hasher=FAST_HASHER) as b,
        bootstrap(Config(database=url, node_id="admin"), hub=hub, hasher=FAST_HASHER) as admin,
    ):
        yield a, b, admin


async def test_suspending_from_an_operators_node_ends_the_sessions_on_every_node(
    nodes: tuple[ChatApp, ChatApp, ChatApp],
) -> None:
    a, b, admin = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    on_a, on_b = await device(a, alice, "pc"), await device(b, alice, "phone")
    bob_b = await online(b, bob)
    await befriend(on_a, bob_b, bob, alice)
    until = admin.node.clock.now_ms() + 60_000
    assert await operators.suspend_user(alice, until, node=admin.node) == 2
    for client in (on_a, on_b):
        assert (await events_until_kicked(client)).reason == suspension_message(until)
    assert a.node.sessions.of(alice) == {} and b.node.sessions.of(alice) == {}
    assert await a.node.presence.sessions(alice) == {}
    with pytest.raises(NotPermitted):
        await b.connect().request(Login("pw", user_id=alice))
    # bob keeps his service
    assert isinstance(await bob_b.request(SendDirectMessage(bob, "note")), MessageAccepted)


async def test_resetting_a_password_ends_the_sessions_and_the_new_one_logs_in(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    assert await operators.reset_password(alice, "fresh one", node=chat.node) == 1
    assert isinstance(await events_until_kicked(a), KickedNotice)
    with pytest.raises(InvalidCredentials):
        await chat.connect().request(Login("pw", user_id=alice))
    assert isinstance(await chat.connect().request(Login("fresh one", user_id=alice)), LoggedIn)


# --------------------------------------------------------------------------- deletion


async def test_deleting_an_account_tells_friends_hands_groups_over_and_frees_the_name(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    bob = await register(chat, "bob")
    carol = await register(chat, "carol")
    a, a_phone = await online(chat, alice), await device(chat, alice, "phone")
    b, c = await online(chat, bob), await online(chat, carol)
    await befriend(a, b, bob, alice)
    shared = await a.request(CreateGroup("team"))
    alone = await a.request(CreateGroup("solo"))
    assert isinstance(shared, GroupCreated) and isinstance(alone, GroupCreated)
    await b.request(JoinGroup(shared.group_id))
    await c.request(BlockUser(alice, block=True))
    await a.request(SendDirectMessage(bob, "remember me"))
    await a.request(SendGroupMessage(shared.group_id, "hello team"))
    b.outbox.events.clear()

    assert await a.request(AccountChange("delete", "pw")) == Done()
    assert isinstance(await events_until_kicked(a_phone), KickedNotice)
    with pytest.raises(NotLoggedIn):
        await a.request(SendDirectMessage(bob, "am I gone?"))
    seen = []
    with anyio.fail_after(5):
        while FriendRemovedNotice(alice) not in seen:
            seen.append(unwrap(await b.next_event()))
    events = [e for e in seen if isinstance(e, GroupEvent)]
    assert [(e.event, e.user_id) for e in events] == [("transfer", bob), ("left", alice)]
    node = chat.node
    group = await operators.show_group(shared.group_id, node=node)
    assert [(m.user.id, m.role) for m in group.members] == [(bob, Role.CREATOR)]
    with pytest.raises(UnknownGroup):
        await operators.show_group(alone.group_id, node=node)  # alone: dissolved
    with pytest.raises(UnknownUser):
        await operators.show_user(alice, node=node)
    assert await node.uow.run(lambda tx: tx.friends.blocked_by(carol)) == []
    with pytest.raises(InvalidCredentials):
        await chat.connect().request(Login("pw", user_id=alice))
    with pytest.raises(UnknownUser):
        await b.request(SendDirectMessage(alice, "hello?"))
    # What alice sent stays with bob, under "deleted user"; her name is free again.
    synced = await b.request(Sync(0, 100))
    assert isinstance(synced, Synced)
    senders = {
        (type(k.delivery).__name__, k.delivery.sender_name)
        for k in synced.msgs
        if isinstance(k.delivery, DirectMessage | GroupMessage)
    }
    assert senders == {("DirectMessage", DELETED_USER_NAME), ("GroupMessage", DELETED_USER_NAME)}
    assert await register(chat, "alice") != alice


async def test_deleting_needs_the_password(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    with pytest.raises(InvalidCredentials):
        await a.request(AccountChange("delete", "wrong"))
    assert isinstance(await a.request(SendDirectMessage(alice, "still here")), MessageAccepted)
    with pytest.raises(UnknownUser):
        await delete_account(999, node=chat.node)


async def test_an_account_deleted_by_an_operator_ends_its_sessions_on_every_node(
    nodes: tuple[ChatApp, ChatApp, ChatApp],
) -> None:
    a, b, admin = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    on_a, on_b = await device(a, alice, "pc"), await device(b, alice, "phone")
    bob_b = await online(b, bob)
    await befriend(on_a, bob_b, bob, alice)
    await delete_account(alice, node=admin.node)
    for client in (on_a, on_b):
        await events_until_kicked(client)
    with anyio.fail_after(5):
        while unwrap(await bob_b.next_event()) != FriendRemovedNotice(alice):
            pass


# --------------------------------------------------------------------------- export, import


async def test_export_then_import_into_another_database_reproduces_every_account(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await befriend(a, b, bob, alice)
    group = await a.request(CreateGroup("team", "the team"))
    assert isinstance(group, GroupCreated)
    await b.request(JoinGroup(group.group_id))
    await a.request(SendDirectMessage(bob, "hi bob"))
    await b.request(SendGroupMessage(group.group_id, "hi team"))
    carol = await register(chat, "carol")
    await a.request(BlockUser(carol, block=True))
    await operators.suspend_user(bob, INDEFINITELY_MS, node=chat.node)
    exported = {
        uid: await operators.show_user(uid, node=chat.node, with_inbox=True)
        for uid in (alice, bob, carol)
    }
    assert exported[alice].blocks == (carol,) and exported[carol].blocked_by == (alice,)
    assert len(exported[bob].kept) == 3  # alice's chat, his joining the group, his group chat
    async with bootstrap(
        Config(database="memory://", node_id="other"), hasher=FAST_HASHER
    ) as other:
        for details in exported.values():
            await operators.import_account(to_exported(details), node=other.node)
        for uid, before in exported.items():
            after = await operators.show_user(uid, node=other.node, with_inbox=True)
            assert after == evolve(before, online_devices=())
        # new ids come after the imported ones, and the imported password works
        assert await register(other, "dave") > carol
        assert isinstance(await other.connect().request(Login("pw", user_id=alice)), LoggedIn)


def to_exported(details: operators.UserDetails) -> operators.Exported:
    return operators.Exported(
        account=details.account,
        friends=tuple(f.id for f in details.friends),
        groups=tuple((g, m.role, m.muted_until) for g, m in details.groups),
        blocks=details.blocks,
        blocked_by=details.blocked_by,
        last_pos=details.last_pos,
        read_pos=details.read_pos,
        kept=details.kept,
    )


# --------------------------------------------------------------------------- groups


async def test_an_operator_dissolves_a_group_and_every_member_is_told(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    group = await a.request(CreateGroup("team"))
    assert isinstance(group, GroupCreated)
    await b.request(JoinGroup(group.group_id))
    b.outbox.events.clear()
    assert await operators.dissolve_group_as_operator(group.group_id, node=chat.node) == 2
    event = unwrap(await b.next_event())
    assert isinstance(event, GroupEvent) and event.event == "dissolved"
    assert await operators.list_groups(node=chat.node) == []
    with pytest.raises(UnknownGroup):
        await operators.dissolve_group_as_operator(group.group_id, node=chat.node)


async def test_listing_users_shows_who_is_online(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    await device(chat, alice, "phone")
    everyone = await operators.list_users(node=chat.node)
    assert [(r.account.user.id, r.online_devices) for r in everyone] == [
        (alice, ("phone",)),
        (bob, ()),
    ]
    online_only = await operators.list_users(node=chat.node, online_only=True)
    assert [r.account.user.id for r in online_only] == [alice]
    assert (await operators.find_user("bob", node=chat.node)).user.id == bob
    assert (await operators.find_user(str(alice), node=chat.node)).user.name == "alice"


def test_until_takes_durations_and_iso_times() -> None:
    from datetime import UTC, datetime

    from chatserver.entrypoints.bootstrap import ConfigError

    now = datetime(2027, 1, 1, tzinfo=UTC)
    base = int(now.timestamp() * 1000)
    assert parse_until(None, now) is None
    assert parse_until("90s", now) == base + 90_000
    assert parse_until("2h", now) == base + 7_200_000
    assert parse_until("7d", now) == base + 7 * 86_400_000
    assert parse_until("2027-01-02", now) == base + 86_400_000
    assert parse_until("2027-01-01T01:00:00Z", now) == base + 3_600_000
    for bad in ("soon", "5y", "2026-12-31"):
        with pytest.raises(ConfigError):
            parse_until(bad, now)


def test_until_past_the_year_9999_or_of_no_length_is_a_mistake_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `--until 99999999999999999999w` reached the database as an integer SQLite cannot
    hold (OverflowError, a traceback, exit 1); `--until 0s` suspended until now."""
    from datetime import UTC, datetime

    from chatserver.entrypoints.bootstrap import ConfigError
    from chatserver.entrypoints.cli import main

    now = datetime(2027, 1, 1, tzinfo=UTC)
    for bad in ("99999999999999999999w", "3000000d", "0s", "0w"):
        with pytest.raises(ConfigError, match=r"^--until "):
            parse_until(bad, now)
    argv = ["admin", "users", "suspend", "1", "--until", "99999999999999999999w",
            "--database", "memory://"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chatserver admin: --until ") and err.count("\n") == 1, err


# --------------------------------------------------------------------------- races with a login


class PausedHasher:
    """The node's hasher, holding the next password check until released: a LOGIN in flight."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reached = anyio.Event()
        self.release = anyio.Event()

    async def hash(self, password: str) -> str:
        return str(await self.inner.hash(password))

    async def verify(self, password: str, password_hash: str | None) -> bool:
        self.reached.set()
        await self.release.wait()
        return bool(await self.inner.verify(password, password_hash))


async def test_a_suspension_committed_while_a_login_is_in_flight_stops_that_login(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    node = chat.node
    paused = PausedHasher(node.hasher)
    node.hasher = paused
    client = chat.connect()
    outcome: list[object] = []

    async def log_in() -> None:
        try:
            outcome.append(await client.request(Login("pw", user_id=alice)))
        except NotPermitted as error:
            outcome.append(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(log_in)
        await paused.reached.wait()  # the account (not suspended yet) was read already
        assert await operators.suspend_user(alice, INDEFINITELY_MS, node=node) == 0
        paused.release.set()
    assert isinstance(outcome[0], NotPermitted), outcome
    assert node.sessions.of(alice) == {}
    assert await node.presence.sessions(alice) == {}
    with pytest.raises(NotLoggedIn):
        await client.request(SendDirectMessage(alice, "in?"))


async def test_guessing_the_password_through_delete_is_throttled_and_others_keep_service(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    refused = 0
    for _ in range(30):
        try:
            await a.request(AccountChange("delete", "guess"))
        except InvalidCredentials:
            refused += 1
        except RateLimited:
            break
    assert 0 < refused < 30  # the login throttle stepped in
    started = time.perf_counter()
    assert isinstance(await b.request(SendDirectMessage(alice, "hi")), MessageAccepted)
    print(f"bob's chat after alice's guesses: {(time.perf_counter() - started) * 1000:.2f} ms")
    assert (await operators.show_user(alice, node=chat.node)).account.user.id == alice


async def test_an_account_in_more_groups_than_a_minutes_changes_is_deleted_whole() -> None:
    config = Config(
        database="memory://", node_id="small", limits=Limits(group_changes_per_minute=3)
    )
    async with bootstrap(config, hasher=FAST_HASHER) as chat:
        alice, bob = await register(chat, "alice"), await register(chat, "bob")
        a, b = await online(chat, alice), await online(chat, bob)
        groups = []
        for name in ("g1", "g2", "g3", "g4", "g5"):
            created = await b.request(CreateGroup(name))
            assert isinstance(created, GroupCreated)
            groups.append(created.group_id)
        for group_id in groups:
            chat.node.group_changes.forget(str(alice))
            await a.request(JoinGroup(group_id))
        await delete_account(alice, node=chat.node)
        for group_id in groups:
            details = await operators.show_group(group_id, node=chat.node)
            assert [m.user.id for m in details.members] == [bob]


def test_times_in_an_export_come_back_to_the_millisecond() -> None:
    from chatserver.entrypoints.admin import _parse_time, _time

    for ms in (1_800_000_000_000, 1_800_000_000_500, 1_800_000_000_007, INDEFINITELY_MS):
        assert _parse_time(_time(ms)) == ms
    assert _time(1_800_000_000_000) == "2027-01-15T08:00:00Z"
    assert _time(INDEFINITELY_MS) == "indefinitely"


def test_the_tables_show_a_mute_as_a_time_and_json_keeps_the_ms() -> None:
    """QA: `admin groups show` printed MUTED_UNTIL as 1796505585162 (ms since the epoch)."""
    import io

    from chatserver.entrypoints.admin import _print

    group = {"id": 1, "name": "team", "members": [
        {"id": 1, "name": "alice", "role": "creator", "muted_until": 0},
        {"id": 2, "name": "bob", "role": "normal", "muted_until": 1_796_505_585_162}]}
    out = io.StringIO()
    _print(group, as_json=False, out=out)
    lines = out.getvalue().splitlines()
    assert lines[-2].split() == ["1", "alice", "creator"], lines
    assert lines[-1].split() == ["2", "bob", "normal", "2026-12-05T21:19:45.162Z"], lines
    out = io.StringIO()
    _print(group, as_json=True, out=out)
    assert '"muted_until": 1796505585162' in out.getvalue()
