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
from chatserver.application.results import (
    GroupCreated,
    GroupJoined,
    LoggedIn,
    MessageAccepted,
    Registered,
)
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
    Event,
    FriendAnswer,
    FriendRequestNotice,
    GroupEvent,
    GroupMessage,
    Kept,
    KickedNotice,
    PresenceNotice,
)
from chatserver.entrypoints.bootstrap import ChatApp, EmbeddedClient

pytestmark = pytest.mark.anyio


def unwrap(event: Event) -> Event:
    """A delivery comes at its place in the user's inbox: the delivery itself."""
    return event.delivery if isinstance(event, Kept) else event


async def register(chat: ChatApp, name: str) -> int:
    result = await chat.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def online(chat: ChatApp, user_id: int, *, receipts: bool = False) -> EmbeddedClient:
    client = chat.connect()
    result = await client.request(Login("pw", user_id=user_id, receipts=receipts))
    assert isinstance(result, LoggedIn)
    return client


def msg_ids(waiting: tuple[Kept, ...]) -> list[int]:
    return [kept.delivery.msg_id for kept in waiting]


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
    event = unwrap(await b.next_event())
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
    assert [m.delivery.msg_id for m in first.waiting] == [s.msg_id for s in sent]  # type: ignore[union-attr]
    await b.request(Logout())
    again = await login(b, bob)
    assert again.waiting == ()


async def test_receipting_session_keeps_stored_messages_until_receipted(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    sent = await a.request(SendDirectMessage(bob, "keep me"))
    assert isinstance(sent, MessageAccepted)
    b = chat.connect()
    assert msg_ids((await login(b, bob, receipts=True)).waiting) == [sent.msg_id]
    await b.request(Logout())
    assert msg_ids((await login(b, bob, receipts=True)).waiting) == [sent.msg_id]
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
    assert [m.delivery.msg_id for m in again.waiting] == [kept.msg_id]


async def test_takeover_kicks_the_older_session_and_hands_over_its_messages(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    old = await online(chat, bob, receipts=True)
    sent = await a.request(SendDirectMessage(bob, "to the old session"))
    assert isinstance(sent, MessageAccepted)
    new = await login(chat.connect(), bob, receipts=True)
    assert [m.delivery.msg_id for m in new.waiting] == [sent.msg_id]
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
    legacy = Login("pw", user_id=bob, notices=False, device="legacy")
    assert isinstance(await old.request(legacy), LoggedIn)
    await a.request(SendDirectMessage(bob, "before the takeover"))
    # a login of the same device takes it over (Version 2: another device would not)
    assert isinstance(await chat.connect().request(legacy), LoggedIn)
    assert [type(unwrap(e)) for e in old.outbox.events] == [DirectMessage]
    assert not old.outbox.closed  # not before the chat it was sent is out
    await old.outbox.flush()
    assert old.outbox.closed


async def test_friend_request_accept_and_presence(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(AddFriend(bob))
    assert unwrap(await b.next_event()) == FriendRequestNotice(alice, "alice")
    await b.request(AnswerFriend(alice, accept=True))
    answer = unwrap(await a.next_event())
    assert isinstance(answer, FriendAnswer) and answer.accepted and answer.responder_id == bob
    # A friendship starts: each side hears the other's state at once.
    assert unwrap(await a.next_event()) == PresenceNotice(bob, True)
    assert unwrap(await b.next_event()) == PresenceNotice(alice, True)
    await b.request(Logout())
    assert unwrap(await a.next_event()) == PresenceNotice(bob, False)
    await login(b, bob)
    assert unwrap(await a.next_event()) == PresenceNotice(bob, True)
    relogged = await login(chat.connect(), alice)
    assert [(c.user.id, c.online) for c in relogged.friends] == [(bob, True)]


async def test_asking_back_accepts_the_waiting_request(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    b = chat.connect()
    assert [u.id for u in (await login(b, bob)).friend_requests] == [alice]
    await b.request(AddFriend(alice))
    answer = unwrap(await a.next_event())
    assert isinstance(answer, FriendAnswer) and answer.accepted
    assert unwrap(await a.next_event()) == PresenceNotice(bob, True)
    assert unwrap(await b.next_event()) == PresenceNotice(alice, True)
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


async def test_a_friendship_started_while_the_requester_is_away_tells_their_state(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    await a.request(Logout())
    b = await online(chat, bob)
    await b.request(AnswerFriend(alice, accept=True))
    assert unwrap(await b.next_event()) == PresenceNotice(alice, False)


async def test_a_declined_request_tells_no_state(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(AddFriend(bob))
    await b.next_event()
    await b.request(AnswerFriend(alice, accept=False))
    answer = unwrap(await a.next_event())
    assert isinstance(answer, FriendAnswer) and not answer.accepted
    assert a.outbox.events == [] and b.outbox.events == []


async def test_declined_answer_waits_for_an_offline_requester(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a = await online(chat, alice)
    await a.request(AddFriend(bob))
    await a.request(Logout())
    b = await online(chat, bob)
    await b.request(AnswerFriend(alice, accept=False))
    waiting = [k.delivery for k in (await login(a, alice)).waiting]
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
    joined = await b.request(JoinGroup(gid))
    assert isinstance(joined, GroupJoined)
    assert (joined.view.group.id, joined.view.group.name, joined.view.group.description) == (
        gid, "g", "desc"
    )
    assert [(m.user.id, m.role, m.online) for m in joined.view.members] == [
        (alice, Role.CREATOR, True), (bob, Role.NORMAL, True)
    ]
    again = await b.request(JoinGroup(gid))  # twice is fine
    assert isinstance(again, GroupJoined) and len(again.view.members) == 2
    c = chat.connect()
    await login(c, carol)
    await c.request(JoinGroup(gid))
    await c.request(Logout())
    # each join was told to the members as a GROUP_EVENT: bob's (alice and bob) and carol's
    joins = [unwrap(await a.next_event()) for _ in range(2)]
    assert [(e.event, e.user_id) for e in joins if isinstance(e, GroupEvent)] == [
        ("joined", bob), ("joined", carol)
    ]
    assert unwrap(await b.next_event()) == joins[0]
    assert unwrap(await b.next_event()) == joins[1]
    sent = await a.request(SendGroupMessage(gid, "hi all"))
    assert isinstance(sent, MessageAccepted)
    got = unwrap(await b.next_event())
    assert isinstance(got, GroupMessage) and got.msg_id == sent.msg_id
    assert a.outbox.events == []  # not echoed to the sender
    carol_login = await login(c, carol)
    assert [m.delivery.msg_id for m in carol_login.waiting] == [sent.msg_id]
    roles = {m.user.id: m.role for m in carol_login.groups[0].members}
    assert roles == {alice: Role.CREATOR, bob: Role.NORMAL, carol: Role.NORMAL}
    await a.request(LeaveGroup(gid))
    with pytest.raises(NotAMember):
        await a.request(LeaveGroup(gid))
    with pytest.raises(NotAMember):
        await a.request(SendGroupMessage(gid, "gone"))
    await a.request(JoinGroup(gid))
    roles = {m.user.id: m.role for m in (await login(chat.connect(), alice)).groups[0].members}
    # the creator's leaving passed the role on to the member who joined earliest
    assert roles == {alice: Role.NORMAL, bob: Role.CREATOR, carol: Role.NORMAL}
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
    assert not chat.node.sessions.of(bob)
    waiting = (await login(chat.connect(), bob)).waiting
    assert [m.delivery.text for m in waiting] == ["during the failed login"]  # type: ignore[union-attr]


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


async def test_the_stored_limit_bounds_what_a_login_pushes_and_sync_reads_the_rest() -> None:
    """(changed in version 2) Senders are never refused for a full mailbox: the inbox keeps
    everything; a device far behind gets the newest stored_limit at login, SYNC the rest."""
    from chatserver.application.commands import Sync
    from chatserver.application.node import Limits
    from chatserver.application.results import Synced
    from chatserver.entrypoints.bootstrap import Config, bootstrap
    from tests.unit.conftest import FAST_HASHER

    config = Config(database="memory://", limits=Limits(stored_per_user=3))
    async with bootstrap(config, hasher=FAST_HASHER) as chat:
        alice, bob = await register(chat, "alice"), await register(chat, "bob")
        a = await online(chat, alice)
        for i in range(5):
            await a.request(SendDirectMessage(bob, f"m{i}"))
        b = chat.connect()
        result = await login(b, bob)
        assert [k.delivery.text for k in result.waiting] == ["m2", "m3", "m4"]  # type: ignore[union-attr]
        assert [k.pos for k in result.waiting] == [3, 4, 5] and result.last_pos == 5
        synced = await b.request(Sync(0))
        assert isinstance(synced, Synced) and [k.pos for k in synced.msgs] == [1, 2, 3, 4, 5]


async def test_a_group_message_reaches_every_member_however_much_waits_for_them() -> None:
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
        await a.request(SendGroupMessage(gid, "first"))
        sent = await a.request(SendGroupMessage(gid, "second"))
        assert isinstance(sent, MessageAccepted) and sent.not_stored == ()
        waiting = (await login(chat.connect(), bob)).waiting
        assert [k.delivery.text for k in waiting] == ["second"]  # type: ignore[union-attr]


async def test_while_the_database_is_down_a_message_is_refused_and_nothing_is_lost(
    chat: ChatApp,
) -> None:
    from chatserver.domain.errors import Unavailable

    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob, receipts=True)
    sent = await a.request(SendDirectMessage(bob, "kept before the outage"))
    assert isinstance(sent, MessageAccepted)
    real = chat.node.uow

    class DownDatabase:
        async def run(self, work: object) -> object:
            raise Unavailable("the database is down")

    chat.node.uow = chat.node.writer.uow = DownDatabase()  # type: ignore[assignment]
    with pytest.raises(Unavailable):  # errno 11: not accepted, so the sender sends it again
        await a.request(SendDirectMessage(bob, "during the outage"))
    await b.close()  # the session ends while its device's mark cannot be kept
    chat.node.uow = chat.node.writer.uow = real
    waiting = (await login(chat.connect(), bob, receipts=True)).waiting
    assert [m.delivery.msg_id for m in waiting] == [sent.msg_id]
