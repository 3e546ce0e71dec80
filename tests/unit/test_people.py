"""PROTOCOL.md Version 2, "People who can protect themselves": FRIEND_REMOVED, BLOCK, ACCOUNT,
on the in-memory node."""

import time
from typing import Any

import anyio
import pytest

from chatserver.application.commands import (
    AccountChange,
    AddFriend,
    AnswerFriend,
    BlockUser,
    CreateGroup,
    JoinGroup,
    Login,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
)
from chatserver.application.results import Done, GroupCreated, LoggedIn, MessageAccepted
from chatserver.domain.errors import (
    InvalidCredentials,
    InvalidRequest,
    NotLoggedIn,
    NotPermitted,
    RateLimited,
    UnknownUser,
)
from chatserver.domain.messages import (
    DirectMessage,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupMessage,
    KickedNotice,
)
from chatserver.entrypoints.bootstrap import ChatApp, EmbeddedClient
from tests.unit.test_use_cases import online, register, unwrap


async def login(client: EmbeddedClient, user_id: int) -> LoggedIn:
    result = await client.request(Login("pw", user_id=user_id, device=f"d{id(client)}"))
    assert isinstance(result, LoggedIn)
    return result


pytestmark = pytest.mark.anyio


async def befriend(a: EmbeddedClient, b: EmbeddedClient, b_id: int, a_id: int) -> None:
    await a.request(AddFriend(b_id))
    await b.request(AnswerFriend(a_id, accept=True))
    a.outbox.events.clear()
    b.outbox.events.clear()


async def device(chat: ChatApp, user_id: int, name: str) -> EmbeddedClient:
    client = chat.connect()
    assert isinstance(await client.request(Login("pw", user_id=user_id, device=name)), LoggedIn)
    return client


async def test_remove_friend_tells_both_users_every_device(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await befriend(a, b, bob, alice)
    a_phone = await device(chat, alice, "phone")
    b_phone = await device(chat, bob, "phone")
    await a.request(RemoveFriend(bob))
    for client, other in ((a, bob), (a_phone, bob), (b, alice), (b_phone, alice)):
        assert unwrap(await client.next_event()) == FriendRemovedNotice(other)


async def test_removing_a_stranger_tells_nobody(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(RemoveFriend(bob))
    await a.outbox.flush()
    await b.outbox.flush()
    assert a.outbox.events == [] and b.outbox.events == []


# --------------------------------------------------------------------------- BLOCK


async def test_blocking_ends_the_friendship_and_tells_both_without_saying_why(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await befriend(a, b, bob, alice)
    await a.request(BlockUser(bob, block=True))
    assert unwrap(await a.next_event()) == FriendRemovedNotice(bob)
    assert unwrap(await b.next_event()) == FriendRemovedNotice(alice)
    relogged = await login(chat.connect(), alice)
    assert relogged.friends == () and relogged.blocked == (bob,)
    assert (await login(chat.connect(), bob)).blocked == ()


async def test_a_blocked_users_chat_is_refused_and_their_friend_request_goes_nowhere(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(BlockUser(bob, block=True))
    with pytest.raises(NotPermitted):
        await b.request(SendDirectMessage(alice, "hello?"))
    assert await b.request(AddFriend(alice)) == Done()
    await a.outbox.flush()
    assert a.outbox.events == []
    assert (await login(chat.connect(), alice)).friend_requests == ()
    # alice may still write to bob; a device bob logs in later is refused too
    assert isinstance(await a.request(SendDirectMessage(bob, "bye")), MessageAccepted)
    b_phone = await device(chat, bob, "phone")
    with pytest.raises(NotPermitted):
        await b_phone.request(SendDirectMessage(alice, "from the phone"))
    # unblocked: chat and friendship are possible again
    await a.request(BlockUser(bob, block=False))
    assert isinstance(await b.request(SendDirectMessage(alice, "again")), MessageAccepted)
    got = unwrap(await a.next_event())
    assert isinstance(got, DirectMessage) and got.text == "again"
    await b.request(AddFriend(alice))
    assert unwrap(await a.next_event()) == FriendRequestNotice(bob, "bob")


async def test_blocking_drops_the_requests_between_the_two(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    await a.request(BlockUser(bob, block=True))
    assert (await login(chat.connect(), bob)).friend_requests == ()
    with pytest.raises(NotPermitted):  # unblock first
        await a.request(AddFriend(bob))


async def test_block_of_an_unknown_user_or_oneself_fails(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    with pytest.raises(UnknownUser):
        await a.request(BlockUser(999, block=True))
    with pytest.raises(InvalidRequest):
        await a.request(BlockUser(alice, block=True))


async def test_groups_are_not_affected_by_a_block(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    created = await a.request(CreateGroup("g"))
    assert isinstance(created, GroupCreated)
    await b.request(JoinGroup(created.group_id))
    await a.request(BlockUser(bob, block=True))
    a.outbox.events.clear()
    assert isinstance(await b.request(SendGroupMessage(created.group_id, "hi")), MessageAccepted)
    while not isinstance(got := unwrap(await a.next_event()), GroupMessage):
        pass
    assert got.text == "hi"


async def test_a_block_unblock_flood_is_rate_limited_and_others_keep_service(
    chat: ChatApp,
) -> None:
    alice, bob, carol = [await register(chat, n) for n in ("alice", "bob", "carol")]
    a, c = await online(chat, alice), await online(chat, carol)
    limit = chat.node.limits.block_changes_per_minute
    refused = 0
    for i in range(limit + 20):
        try:
            await a.request(BlockUser(bob, block=i % 2 == 0))
        except RateLimited:
            refused += 1
    assert refused == 20
    started = time.perf_counter()
    assert isinstance(await c.request(SendDirectMessage(bob, "still fine")), MessageAccepted)
    await c.request(BlockUser(bob, block=True))  # another user's blocks are their own
    print(f"carol's chat during alice's flood: {(time.perf_counter() - started) * 1000:.2f} ms")


# --------------------------------------------------------------------------- ACCOUNT


async def test_changing_the_password_ends_the_other_sessions_and_the_new_one_logs_in(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    a_phone = await device(chat, alice, "phone")
    assert await a.request(AccountChange("password", "pw", "new secret")) == Done()
    assert isinstance(unwrap(await a_phone.next_event()), KickedNotice)
    with pytest.raises(NotLoggedIn):
        await a_phone.request(SendDirectMessage(alice, "still here?"))
    assert isinstance(await a.request(SendDirectMessage(alice, "I stay")), MessageAccepted)
    with pytest.raises(InvalidCredentials):
        await chat.connect().request(Login("pw", user_id=alice))
    assert isinstance(
        await chat.connect().request(Login("new secret", user_id=alice, device="x")), LoggedIn
    )


async def test_a_wrong_password_is_refused_and_counted_by_the_login_throttle(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    refused = 0
    for _ in range(30):
        try:
            await a.request(AccountChange("password", "guess", "new secret"))
        except InvalidCredentials:
            refused += 1
        except RateLimited:
            break
    assert 0 < refused < 30  # the throttle stepped in before 30 guesses
    with pytest.raises(RateLimited):
        await a.request(AccountChange("password", "pw", "new secret"))


async def test_account_requests_are_checked(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    a = await online(chat, alice)
    with pytest.raises(InvalidRequest):
        await a.request(AccountChange("password", "pw"))
    with pytest.raises(InvalidRequest):
        await a.request(AccountChange("rename", "pw"))


# --------------------------------------------------------------------------- BLOCK racing a LOGIN


class PausedUnitOfWork:
    """The node's unit of work, holding the result of its pause_at-th transaction from now
    until released: a LOGIN whose snapshot was read but not yet taken in."""

    def __init__(self, inner: Any, pause_at: int) -> None:
        self.inner = inner
        self.pause_at = pause_at
        self.calls = 0
        self.reached = anyio.Event()
        self.release = anyio.Event()

    async def run(self, work: Any) -> Any:
        call = self.calls
        self.calls += 1
        result = await self.inner.run(work)
        if call == self.pause_at:
            self.reached.set()
            await self.release.wait()
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_block_arriving_while_the_blocked_users_login_is_in_flight_takes_effect(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    b = await online(chat, bob)
    node = chat.node
    real = node.uow
    paused = PausedUnitOfWork(real, pause_at=1)  # a LOGIN: the account, then the snapshot
    node.uow = paused
    a = chat.connect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(login, a, alice)
        await paused.reached.wait()  # alice's snapshot says nobody blocks her
        assert await b.request(BlockUser(alice, block=True)) == Done()
        paused.release.set()
    node.uow = real
    with pytest.raises(NotPermitted):
        await a.request(SendDirectMessage(bob, "let me in"))
    await b.outbox.flush()
    assert not any(isinstance(unwrap(e), DirectMessage) for e in b.outbox.events)


@pytest.mark.parametrize("database", ["memory://", "sqlite"])
async def test_a_deleted_users_conversation_stays_readable_with_history(
    database: str, tmp_path: Any,
) -> None:
    """QA: the messages a deleted account sent stay in others' inboxes (as from "deleted
    user", PROTOCOL.md), but HISTORY `with` its id was errno 4 "no such user", so a client
    could no longer page through that conversation; SYNC still showed it. An id that never
    had a conversation with the requester is still errno 4."""
    from chatserver.entrypoints.bootstrap import Config, bootstrap
    from tests.unit.conftest import FAST_HASHER

    url = f"sqlite:///{tmp_path / 'chat.db'}" if database == "sqlite" else database
    async with bootstrap(Config(database=url, node_id="test"), hasher=FAST_HASHER) as chat:
        await _deleted_users_conversation(chat)


async def _deleted_users_conversation(chat: ChatApp) -> None:
    from chatserver.application.commands import History
    from chatserver.application.results import HistoryPage

    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(SendDirectMessage(bob, "before I go"))
    await b.request(SendDirectMessage(alice, "bye"))
    assert isinstance(await a.request(AccountChange("delete", "pw")), Done)
    page = await b.request(History(with_user=alice))
    assert isinstance(page, HistoryPage)
    shown = [unwrap(kept) for kept in page.msgs]
    assert [(m.sender_name, m.text) for m in shown if isinstance(m, DirectMessage)] == [
        ("deleted user", "before I go"), ("bob", "bye")]
    with pytest.raises(UnknownUser):
        await b.request(History(with_user=alice + 1000))
