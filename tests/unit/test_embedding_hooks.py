"""Issue 17 items 3 and 4: an embedder's authenticator (LOGIN with `token`), provisioning from
code, and the hooks before_send and after_event, on an in-memory node."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from chatserver import (
    AddFriend,
    AnswerFriend,
    Config,
    CreateGroup,
    DirectMessage,
    FriendRemoved,
    FriendRequested,
    GroupEvent,
    GroupFounded,
    GroupMessage,
    InvalidCredentials,
    InvalidRequest,
    Kept,
    Limits,
    LoggedIn,
    Login,
    NotPermitted,
    RateLimited,
    Register,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
    open_node,
)
from chatserver.application.hooks import (
    AccountCreated,
    Allow,
    HookEvent,
    Hooks,
    Outgoing,
    Reject,
)
from chatserver.entrypoints.bootstrap import ChatApp
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}


async def app_token_check(token: str) -> str | None:
    await anyio.lowlevel.checkpoint()
    return TOKENS.get(token)


@pytest.fixture
async def node() -> AsyncIterator[ChatApp]:
    config = Config(database="memory://", node_id="t", authenticator=app_token_check)
    async with open_node(config, hasher=FAST_HASHER) as app:
        yield app


async def test_a_token_login_creates_the_account_on_first_sight_and_finds_it_again(
    node: ChatApp,
) -> None:
    first = await node.connect().request(Login(token="tok-alice"))
    assert isinstance(first, LoggedIn) and first.user.name == "alice"
    again = await node.connect().request(Login(token="tok-alice", device="phone"))
    assert isinstance(again, LoggedIn) and again.user.id == first.user.id


async def test_a_refused_token_is_invalid_credentials(node: ChatApp) -> None:
    with pytest.raises(InvalidCredentials):
        await node.connect().request(Login(token="forged"))


async def test_a_token_naming_another_user_than_the_id_given_is_refused(node: ChatApp) -> None:
    bob = await node.connect().request(Login(token="tok-bob"))
    assert isinstance(bob, LoggedIn)
    with pytest.raises(InvalidCredentials):
        await node.connect().request(Login(token="tok-alice", user_id=bob.user.id))


async def test_a_token_account_has_no_password_that_works(node: ChatApp) -> None:
    alice = await node.connect().request(Login(token="tok-alice"))
    assert isinstance(alice, LoggedIn)
    with pytest.raises(InvalidCredentials):
        await node.connect().request(Login("!token", user_id=alice.user.id))


async def test_passwords_still_work_beside_an_authenticator(node: ChatApp) -> None:
    client = node.connect()
    registered = await client.request(Register("carol", "secret"))
    assert isinstance(await client.request(Login("secret", name="carol")), LoggedIn)
    assert registered.user_id > 0  # type: ignore[attr-defined]


async def test_without_an_authenticator_a_token_login_is_invalid_request() -> None:
    async with open_node(Config(database="memory://"), hasher=FAST_HASHER) as app:
        with pytest.raises(InvalidRequest):
            await app.connect().request(Login(token="tok-alice", name="alice"))


async def test_a_token_longer_than_4096_characters_is_invalid_request(node: ChatApp) -> None:
    with pytest.raises(InvalidRequest):
        await node.connect().request(Login(token="x" * 4097))


async def test_a_failing_authenticator_is_unavailable_and_the_node_goes_on() -> None:
    async def broken(token: str) -> str | None:
        raise RuntimeError("auth backend down")

    config = Config(database="memory://", authenticator=broken)
    async with open_node(config, hasher=FAST_HASHER) as app:
        from chatserver import Unavailable

        with pytest.raises(Unavailable):
            await app.connect().request(Login(token="tok-alice"))
        client = app.connect()
        await client.request(Register("dave", "secret"))
        assert isinstance(await client.request(Login("secret", name="dave")), LoggedIn)


async def test_a_token_flood_hits_the_login_throttle_while_a_bystander_logs_in() -> None:
    limits = Limits(failed_logins_per_account_and_address=10, failed_logins_per_address=100)
    config = Config(database="memory://", authenticator=app_token_check, limits=limits)
    async with open_node(config, hasher=FAST_HASHER) as app:
        refused = throttled = 0
        latencies_ms: list[float] = []

        async def flood(worker: int) -> None:
            nonlocal refused, throttled
            attacker = app.connect()
            attacker.connection.address = "10.0.0.66"
            for n in range(100):
                try:
                    await attacker.request(Login(token=f"guess-{worker}-{n}"))
                except InvalidCredentials:
                    refused += 1
                except RateLimited:
                    throttled += 1

        async def bystander() -> None:
            for _ in range(20):
                client = app.connect()
                client.connection.address = "10.0.0.2"
                started = time.perf_counter()
                assert isinstance(await client.request(Login(token="tok-bob")), LoggedIn)
                latencies_ms.append((time.perf_counter() - started) * 1000)
                await client.close()
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tasks:
            for worker in range(4):
                tasks.start_soon(flood, worker)
            tasks.start_soon(bystander)
        worst = max(latencies_ms)
        print(f"token flood of 400 from one address: {refused} refused, {throttled} throttled; "
              f"bystander's 20 token logins meanwhile: worst {worst:.2f} ms")
        assert refused == 10 and throttled == 390
        assert worst < 1000


async def test_provisioning_from_code_uses_the_protocols_rules(node: ChatApp) -> None:
    alice = await node.create_user("alice", "secret")
    bob = await node.create_user("bob")  # a token-only account
    group_id = await node.create_group(alice.id, "team", "from code")
    await node.add_member(group_id, bob.id)
    client = node.connect()
    logged = await client.request(Login("secret", user_id=alice.id))
    assert isinstance(logged, LoggedIn)
    (view,) = logged.groups
    assert view.group.id == group_id
    assert {m.user.name for m in view.members} == {"alice", "bob"}
    bob_login = await node.connect().request(Login(token="tok-bob"))
    assert isinstance(bob_login, LoggedIn) and bob_login.user.id == bob.id
    from chatserver import NameTaken

    with pytest.raises(NameTaken):
        await node.create_user("alice")


async def hook_node(hooks: Hooks) -> AsyncIterator[ChatApp]:
    async with open_node(Config(database="memory://", hooks=hooks), hasher=FAST_HASHER) as app:
        yield app


async def two_users(app: ChatApp) -> tuple[object, int, object, int]:
    a, b = app.connect(), app.connect()
    ida = (await a.request(Register("alice", "secret"))).user_id  # type: ignore[attr-defined]
    idb = (await b.request(Register("bob", "secret"))).user_id  # type: ignore[attr-defined]
    await a.request(Login("secret", user_id=ida))
    await b.request(Login("secret", user_id=idb))
    return a, ida, b, idb


async def test_before_send_rejects_with_its_reason_and_rewrites_the_text() -> None:
    seen: list[Outgoing] = []

    async def policy(out: Outgoing) -> Allow | Reject:
        seen.append(out)
        if "forbidden" in out.text:
            return Reject("no forbidden words")
        return Allow(out.text.replace("darn", "****"))

    async with open_node(
        Config(database="memory://", hooks=Hooks(before_send=policy)), hasher=FAST_HASHER
    ) as app:
        a, _ida, b, idb = await two_users(app)
        with pytest.raises(NotPermitted, match="no forbidden words"):
            await a.request(SendDirectMessage(idb, "a forbidden word"))  # type: ignore[attr-defined]
        await a.request(SendDirectMessage(idb, "darn it"))  # type: ignore[attr-defined]
        event = await b.next_event()  # type: ignore[attr-defined]
        assert isinstance(event, Kept) and isinstance(event.delivery, DirectMessage)
        assert event.delivery.text == "**** it"
        group_id = (await a.request(CreateGroup("g"))).group_id  # type: ignore[attr-defined]
        with pytest.raises(NotPermitted):
            await a.request(SendGroupMessage(group_id, "forbidden"))  # type: ignore[attr-defined]
        assert [o.group_id for o in seen][-1] == group_id


@pytest.mark.parametrize("on_timeout", ["allow", "reject"])
async def test_a_slow_before_send_is_cut_off_and_the_message_allowed_or_refused(
    on_timeout: str,
) -> None:
    async def slow(out: Outgoing) -> Allow | Reject:
        await anyio.sleep(30)
        return Reject("never")

    hooks = Hooks(before_send=slow, before_send_seconds=0.05, on_timeout=on_timeout)  # type: ignore[arg-type]
    async with open_node(Config(database="memory://", hooks=hooks), hasher=FAST_HASHER) as app:
        a, _ida, _b, idb = await two_users(app)
        started = time.perf_counter()
        if on_timeout == "allow":
            await a.request(SendDirectMessage(idb, "hi"))  # type: ignore[attr-defined]
        else:
            with pytest.raises(NotPermitted):
                await a.request(SendDirectMessage(idb, "hi"))  # type: ignore[attr-defined]
        assert time.perf_counter() - started < 2


async def test_a_failing_before_send_is_handled_as_a_timeout() -> None:
    async def broken(out: Outgoing) -> Allow | Reject:
        raise RuntimeError("policy service down")

    async with open_node(
        Config(database="memory://", hooks=Hooks(before_send=broken)), hasher=FAST_HASHER
    ) as app:
        a, _ida, _b, idb = await two_users(app)
        await a.request(SendDirectMessage(idb, "still goes"))  # type: ignore[attr-defined]


async def test_after_event_hears_accounts_messages_and_group_changes_once_each() -> None:
    heard: list[HookEvent] = []
    got = anyio.Event()

    async def record(event: HookEvent) -> None:
        heard.append(event)
        if isinstance(event, GroupMessage):
            got.set()

    async with open_node(
        Config(database="memory://", hooks=Hooks(after_event=record)), hasher=FAST_HASHER
    ) as app:
        a, ida, b, idb = await two_users(app)
        await a.request(SendDirectMessage(idb, "hi"))  # type: ignore[attr-defined]
        await a.request(AddFriend(idb))  # type: ignore[attr-defined]
        await b.request(AnswerFriend(ida, True))  # type: ignore[attr-defined]
        await b.request(RemoveFriend(ida))  # type: ignore[attr-defined]
        group_id = (await a.request(CreateGroup("g"))).group_id  # type: ignore[attr-defined]
        await app.add_member(group_id, idb)
        await a.request(SendGroupMessage(group_id, "all"))  # type: ignore[attr-defined]
        with anyio.fail_after(5):
            await got.wait()
    kinds = [type(e).__name__ for e in heard]
    assert kinds.count("AccountCreated") == 2
    assert kinds.count("DirectMessage") == 1  # kept in two inboxes, heard once
    assert kinds.count("GroupMessage") == 1
    assert FriendRequested(ida, idb) in heard and FriendRemoved(idb, ida) in heard
    assert kinds.count("FriendAnswer") == 1
    assert GroupFounded(group_id, ida, "g") in heard
    assert any(isinstance(e, GroupEvent) and e.event == "joined" for e in heard)
    assert all(isinstance(e, AccountCreated) for e in heard[:2])


async def test_a_slow_or_failing_after_event_never_slows_the_senders() -> None:
    calls = 0

    async def bad(event: HookEvent) -> None:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("the app's table is locked")
        await anyio.sleep(3600)

    hooks = Hooks(after_event=bad, after_event_queue=50, after_event_seconds=0.01)
    async with open_node(Config(database="memory://", hooks=hooks), hasher=FAST_HASHER) as app:
        a, _ida, _b, idb = await two_users(app)
        started = time.perf_counter()
        for n in range(500):
            await a.request(SendDirectMessage(idb, f"m{n}"))  # type: ignore[attr-defined]
        per_message_us = (time.perf_counter() - started) / 500 * 1e6
        feed = app.node.events
        assert feed is not None
        print(f"500 chats beside a failing, slow after_event: {per_message_us:.0f} us each; "
              f"delivered {feed.delivered}, failed {feed.failed}, dropped {feed.dropped}")
        assert feed.dropped > 0 and feed.failed > 0
        assert len(feed) <= 50


@pytest.mark.parametrize("database", ["memory://", "sqlite"])
async def test_set_password_from_code_replaces_the_old_one(database: str, tmp_path: object) -> None:
    url = database if database == "memory://" else f"sqlite:///{tmp_path}/chat.db"
    async with open_node(Config(database=url), hasher=FAST_HASHER) as app:
        user = await app.create_user("erin", "old-secret")
        await app.set_password(user.id, "new-secret")
        with pytest.raises(InvalidCredentials):
            await app.connect().request(Login("old-secret", user_id=user.id))
        assert isinstance(await app.connect().request(Login("new-secret", name="erin")), LoggedIn)
        token_only = await app.create_user("frank")
        await app.set_password(token_only.id, "now-a-password")
        assert isinstance(
            await app.connect().request(Login("now-a-password", user_id=token_only.id)), LoggedIn
        )
        from chatserver import UnknownUser

        with pytest.raises(UnknownUser):
            await app.set_password(9999, "whatever")
