"""The use cases through the core's own entry point, on in-memory adapters."""

import pytest

from chatserver.application.commands import (
    AddFriend,
    AnswerFriend,
    CreateGroup,
    JoinGroup,
    LeaveGroup,
    Login,
    Logout,
    Ping,
    Receipt,
    Register,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
)
from chatserver.application.results import GroupCreated, LoggedIn, MessageAccepted, Registered
from chatserver.domain.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    NameTaken,
    NotAMember,
    NotLoggedIn,
    RateLimited,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.groups import Role
from chatserver.domain.messages import (
    DirectMessage,
    FriendAnswer,
    FriendRequestNotice,
    GroupMessage,
    KickedNotice,
    PresenceNotice,
)
from chatserver.entrypoints.bootstrap import ChatApp, EmbeddedClient

pytestmark = pytest.mark.anyio


async def register(chat: ChatApp, name: str) -> int:
    result = await chat.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def online(chat: ChatApp, user_id: int, *, receipts: bool = False) -> EmbeddedClient:
    client = chat.connect()
    result = await client.request(Login("pw", user_id=user_id, receipts=receipts))
    assert isinstance(result, LoggedIn)
    return client


async def login(client: EmbeddedClient, user_id: int, *, receipts: bool = False) -> LoggedIn:
    result = await client.request(Login("pw", user_id=user_id, receipts=receipts))
    assert isinstance(result, LoggedIn)
    return result


async def test_register_rejects_a_taken_name(chat: ChatApp) -> None:
    await register(chat, "alice")
    with pytest.raises(NameTaken):
        await register(chat, "alice")


async def test_register_checks_lengths_before_anything_else(chat: ChatApp) -> None:
    with pytest.raises(InvalidRequest):
        await chat.connect().request(Register("x" * 51, "pw"))
    with pytest.raises(InvalidRequest):
        await chat.connect().request(Register("bob", ""))


async def test_login_by_name_and_wrong_password(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    client = chat.connect()
    result = await client.request(Login("pw", name="alice"))
    assert isinstance(result, LoggedIn) and result.user.id == alice
    with pytest.raises(InvalidCredentials, match="id or password is invalid!"):
        await chat.connect().request(Login("nope", user_id=alice))
    with pytest.raises(InvalidCredentials):
        await chat.connect().request(Login("pw", user_id=999))


async def test_requests_need_a_login_and_the_own_identity(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    client = chat.connect()
    assert await client.request(Ping())
    with pytest.raises(NotLoggedIn):
        await client.request(SendDirectMessage(alice, "hi"))
    with pytest.raises(NotLoggedIn):
        await client.request(Logout())
    await login(client, alice)
    with pytest.raises(Forbidden):
        await client.connection.handle(Logout(), claimed_id=alice + 1)


async def test_a_bad_value_is_reported_before_the_missing_login(chat: ChatApp) -> None:
    with pytest.raises(InvalidRequest):
        await chat.connect().request(SendDirectMessage(1, ""))


async def test_chat_between_online_users_is_live(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    accepted = await a.request(SendDirectMessage(bob, "hi bob"))
    assert isinstance(accepted, MessageAccepted)
    event = await b.next_event()
    assert isinstance(event, DirectMessage)
    assert (event.msg_id, event.sender_id, event.sender_name, event.text) == (
        accepted.msg_id, alice, "alice", "hi bob")


async def test_chat_to_an_unknown_user_is_refused(chat: ChatApp) -> None:
    a = await online(chat, await register(chat, "alice"))
    with pytest.raises(UnknownUser):
        await a.request(SendDirectMessage(424242, "anyone?"))


async def test_offline_messages_arrive_oldest_first_and_once(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    sent = [await a.request(SendDirectMessage(bob, f"m{i}")) for i in range(3)]
    b = chat.connect()
    first = await login(b, bob)
    assert [m.msg_id for m in first.waiting] == [s.msg_id for s in sent]  # type: ignore[union-attr]
    await b.request(Logout())
    again = await login(b, bob)
    assert again.waiting == ()


async def test_receipting_session_keeps_stored_messages_until_receipted(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    sent = await a.request(SendDirectMessage(bob, "keep me"))
    assert isinstance(sent, MessageAccepted)
    b = chat.connect()
    assert [m.msg_id for m in (await login(b, bob, receipts=True)).waiting] == [sent.msg_id]
    await b.request(Logout())
    assert [m.msg_id for m in (await login(b, bob, receipts=True)).waiting] == [sent.msg_id]
    await b.request(Receipt((sent.msg_id,)))
    await b.request(Logout())
    assert (await login(b, bob, receipts=True)).waiting == ()


async def test_unreceipted_live_messages_are_stored_when_the_session_ends(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob, receipts=True)
    kept = await a.request(SendDirectMessage(bob, "not receipted"))
    done = await a.request(SendDirectMessage(bob, "receipted"))
    assert isinstance(kept, MessageAccepted) and isinstance(done, MessageAccepted)
    await b.request(Receipt((done.msg_id,)))
    await b.close()
    again = await login(chat.connect(), bob, receipts=True)
    assert [m.msg_id for m in again.waiting] == [kept.msg_id]


async def test_takeover_kicks_the_older_session_and_hands_over_its_messages(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    old = await online(chat, bob, receipts=True)
    sent = await a.request(SendDirectMessage(bob, "to the old session"))
    assert isinstance(sent, MessageAccepted)
    new = await login(chat.connect(), bob, receipts=True)
    assert [m.msg_id for m in new.waiting] == [sent.msg_id]
    assert isinstance(old.outbox.events[-1], KickedNotice)
    assert not old.connection.logged_in
    with pytest.raises(NotLoggedIn):
        await old.request(SendDirectMessage(alice, "still there?"))


async def test_a_takeover_closes_the_connection_of_a_client_that_takes_no_notices(
    chat: ChatApp,
) -> None:
    """A client of the original server cannot show KICKED_MSG: its connection ends instead,
    once what it was sent is written."""
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    old = chat.connect()
    assert isinstance(await old.request(Login("pw", user_id=bob, notices=False)), LoggedIn)
    await a.request(SendDirectMessage(bob, "before the takeover"))
    await login(chat.connect(), bob)
    assert [type(e) for e in old.outbox.events] == [DirectMessage]
    assert not old.outbox.closed  # not before the chat it was sent is out
    await old.outbox.flush()
    assert old.outbox.closed


async def test_friend_request_accept_and_presence(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(AddFriend(bob))
    assert await b.next_event() == FriendRequestNotice(alice, "alice")
    await b.request(AnswerFriend(alice, accept=True))
    answer = await a.next_event()
    assert isinstance(answer, FriendAnswer) and answer.accepted and answer.responder_id == bob
    await b.request(Logout())
    assert await a.next_event() == PresenceNotice(bob, False)
    await login(b, bob)
    assert await a.next_event() == PresenceNotice(bob, True)
    relogged = await login(chat.connect(), alice)
    assert [(c.user.id, c.online) for c in relogged.friends] == [(bob, True)]


async def test_asking_back_accepts_the_waiting_request(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    b = chat.connect()
    assert [u.id for u in (await login(b, bob)).friend_requests] == [alice]
    await b.request(AddFriend(alice))
    answer = await a.next_event()
    assert isinstance(answer, FriendAnswer) and answer.accepted
    assert [c.user.id for c in (await login(chat.connect(), bob)).friends] == [alice]


async def test_friend_errors(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    with pytest.raises(InvalidRequest):
        await a.request(AddFriend(alice))
    with pytest.raises(UnknownUser):
        await a.request(AddFriend(999))
    with pytest.raises(UnknownUser):
        await a.request(AnswerFriend(bob, accept=True))
    with pytest.raises(InvalidRequest):
        await a.request(AnswerFriend(alice, accept=True))
    with pytest.raises(UnknownUser):
        await a.request(RemoveFriend(999))
    await a.request(RemoveFriend(bob))  # no friendship: nothing to do, no error


async def test_declined_answer_waits_for_an_offline_requester(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    await a.request(Logout())
    b = await online(chat, bob)
    await b.request(AnswerFriend(alice, accept=False))
    waiting = (await login(a, alice)).waiting
    assert len(waiting) == 1 and isinstance(waiting[0], FriendAnswer)
    assert not waiting[0].accepted


async def test_group_lifecycle_and_chat(chat: ChatApp) -> None:
    alice, bob, carol = [await register(chat, n) for n in ("alice", "bob", "carol")]
    a, b = await online(chat, alice), await online(chat, bob)
    created = await a.request(CreateGroup("g", "desc"))
    assert isinstance(created, GroupCreated)
    gid = created.group_id
    with pytest.raises(NameTaken):
        await b.request(CreateGroup("g"))
    with pytest.raises(NotAMember):
        await b.request(SendGroupMessage(gid, "let me in"))
    await b.request(JoinGroup(gid))
    await b.request(JoinGroup(gid))  # twice is fine
    c = chat.connect()
    await login(c, carol)
    await c.request(JoinGroup(gid))
    await c.request(Logout())
    sent = await a.request(SendGroupMessage(gid, "hi all"))
    assert isinstance(sent, MessageAccepted)
    got = await b.next_event()
    assert isinstance(got, GroupMessage) and got.msg_id == sent.msg_id
    assert a.outbox.events == []  # not echoed to the sender
    carol_login = await login(c, carol)
    assert [m.msg_id for m in carol_login.waiting] == [sent.msg_id]
    roles = {m.user.id: m.role for m in carol_login.groups[0].members}
    assert roles == {alice: Role.CREATOR, bob: Role.NORMAL, carol: Role.NORMAL}
    await a.request(LeaveGroup(gid))
    with pytest.raises(NotAMember):
        await a.request(LeaveGroup(gid))
    with pytest.raises(NotAMember):
        await a.request(SendGroupMessage(gid, "gone"))
    await a.request(JoinGroup(gid))
    roles = {m.user.id: m.role for m in (await login(chat.connect(), alice)).groups[0].members}
    assert roles[alice] is Role.NORMAL
    with pytest.raises(UnknownGroup):
        await b.request(JoinGroup(999))
    with pytest.raises(UnknownGroup):
        await b.request(SendGroupMessage(999, "x"))


async def test_message_ids_are_unique_and_positive(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    ids = []
    for i in range(50):
        accepted = await a.request(SendDirectMessage(bob, str(i)))
        assert isinstance(accepted, MessageAccepted)
        ids.append(accepted.msg_id)
    assert len(set(ids)) == 50 and min(ids) > 0


async def test_a_login_that_fails_midway_leaves_no_session_and_loses_nothing(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    real = chat.node.presence

    class BrokenPresence:
        claim, release = real.claim, real.release

        async def locate(self, user_ids: object) -> dict[int, str]:
            # A message arrives while the login is under way, then the login fails.
            await a.request(SendDirectMessage(bob, "during the failed login"))
            raise RuntimeError("presence is down")

    chat.node.presence = BrokenPresence()
    with pytest.raises(RuntimeError):
        await login(chat.connect(), bob)
    chat.node.presence = real
    assert chat.node.sessions.get(bob) is None
    waiting = (await login(chat.connect(), bob)).waiting
    assert [m.text for m in waiting] == ["during the failed login"]  # type: ignore[union-attr]


async def test_wrong_passwords_lock_the_account_for_a_while_even_for_the_right_one(
    chat: ChatApp,
) -> None:
    alice = await register(chat, "alice")
    for _ in range(chat.node.limits.failed_logins_per_account_and_address):
        with pytest.raises(InvalidCredentials):
            await chat.connect().request(Login("guess", user_id=alice))
    with pytest.raises(RateLimited):
        await chat.connect().request(Login("pw", name="alice"))  # by name: the same account
    bob = await register(chat, "bob")
    assert isinstance(await chat.connect().request(Login("pw", user_id=bob)), LoggedIn)


async def test_login_locks_lift_when_the_window_passes() -> None:
    from chatserver.application.throttle import FailureWindow

    window = FailureWindow(limit=2, window_seconds=60)
    window.fail("a", now=0)
    window.fail("a", now=1)
    assert window.blocked("a", now=30)
    assert not window.blocked("a", now=62)


async def test_a_full_mailbox_refuses_more_with_a_clear_error() -> None:
    from chatserver.application.node import Limits
    from chatserver.domain.errors import QuotaExceeded
    from chatserver.entrypoints.bootstrap import Config, bootstrap
    from tests.unit.conftest import FAST_HASHER

    config = Config(database="memory://", limits=Limits(stored_per_user=3))
    async with bootstrap(config, hasher=FAST_HASHER) as chat:
        alice, bob = await register(chat, "alice"), await register(chat, "bob")
        a = await online(chat, alice)
        for i in range(3):
            await a.request(SendDirectMessage(bob, f"m{i}"))
        with pytest.raises(QuotaExceeded):
            await a.request(SendDirectMessage(bob, "one too many"))
        b = await online(chat, bob)  # reading the mailbox empties it
        await a.request(SendDirectMessage(bob, "live again"))
        assert isinstance(await b.next_event(), DirectMessage)


async def test_a_full_mailbox_misses_a_group_message_without_holding_up_the_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chatserver.application.node import Limits
    from chatserver.entrypoints.bootstrap import Config, bootstrap
    from tests.unit.conftest import FAST_HASHER

    config = Config(database="memory://", limits=Limits(stored_per_user=2))
    async with bootstrap(config, hasher=FAST_HASHER) as chat:
        alice, bob, carol, dave = [
            await register(chat, name) for name in ("alice", "bob", "carol", "dave")
        ]
        a = await online(chat, alice)
        gid = (await a.request(CreateGroup("g"))).group_id  # type: ignore[union-attr]
        for member in (bob, carol, dave):
            joined = await online(chat, member)
            await joined.request(JoinGroup(gid))
            if member != dave:
                await joined.request(Logout())
        d = await online(chat, dave)
        for i in range(2):  # bob's mailbox is now full
            await a.request(SendDirectMessage(bob, f"m{i}"))

        sent = await a.request(SendGroupMessage(gid, "to all"))

        assert isinstance(sent, MessageAccepted) and sent.not_stored == (bob,)
        assert f"msg_id={sent.msg_id} group={gid} sender={alice} users=[{bob}]" in caplog.text
        got = await d.next_event()  # live members get it
        assert isinstance(got, GroupMessage) and got.msg_id == sent.msg_id
        waiting_for_carol = (await login(chat.connect(), carol)).waiting
        assert [m.msg_id for m in waiting_for_carol] == [sent.msg_id]
        waiting_for_bob = (await login(chat.connect(), bob)).waiting
        assert [m.text for m in waiting_for_bob] == ["m0", "m1"]  # type: ignore[union-attr]
        again = await a.request(SendGroupMessage(gid, "bob is back"))
        assert isinstance(again, MessageAccepted) and again.not_stored == ()


async def test_a_group_message_is_accepted_even_when_every_member_away_is_full() -> None:
    from chatserver.application.node import Limits
    from chatserver.entrypoints.bootstrap import Config, bootstrap
    from tests.unit.conftest import FAST_HASHER

    config = Config(database="memory://", limits=Limits(stored_per_user=1))
    async with bootstrap(config, hasher=FAST_HASHER) as chat:
        alice, bob = await register(chat, "alice"), await register(chat, "bob")
        a = await online(chat, alice)
        gid = (await a.request(CreateGroup("g"))).group_id  # type: ignore[union-attr]
        b = await online(chat, bob)
        await b.request(JoinGroup(gid))
        await b.request(Logout())
        await a.request(SendGroupMessage(gid, "fills it"))
        sent = await a.request(SendGroupMessage(gid, "misses it"))
        assert isinstance(sent, MessageAccepted) and sent.not_stored == (bob,)
        waiting = (await login(chat.connect(), bob)).waiting
        assert [m.text for m in waiting] == ["fills it"]  # type: ignore[union-attr]


async def test_unreceipted_messages_wait_in_memory_while_the_database_is_down(
    chat: ChatApp,
) -> None:
    from chatserver.domain.errors import Unavailable

    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob, receipts=True)
    sent = await a.request(SendDirectMessage(bob, "kept through the outage"))
    assert isinstance(sent, MessageAccepted)
    real = chat.node.uow

    class DownDatabase:
        async def run(self, work: object) -> object:
            raise Unavailable("the database is down")

    chat.node.uow = DownDatabase()  # type: ignore[assignment]
    await b.close()  # the session ends while nothing can be stored
    chat.node.uow = real
    assert len(chat.node.custody.unstored) == 1
    await chat.node.custody.retry_unstored()  # what the background task does every few seconds
    waiting = (await login(chat.connect(), bob, receipts=True)).waiting
    assert [m.msg_id for m in waiting] == [sent.msg_id]
