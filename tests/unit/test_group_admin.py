"""Groups that can be run (PROTOCOL.md Version 2): roles, kick, transfer, dissolve, mute, update,
the creator's leaving, and the member limit, through the core on in-memory adapters."""

import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from attrs import define
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatserver.application.commands import (
    CreateGroup,
    DissolveGroup,
    History,
    JoinGroup,
    KickMember,
    LeaveGroup,
    Login,
    Logout,
    MuteMember,
    Register,
    SendGroupMessage,
    SetMemberRole,
    TransferGroup,
    UpdateGroup,
)
from chatserver.application.node import Limits
from chatserver.application.results import (
    GroupCreated,
    GroupJoined,
    HistoryPage,
    LoggedIn,
    Registered,
)
from chatserver.domain.errors import (
    ChatError,
    InvalidRequest,
    Muted,
    NameTaken,
    NotAMember,
    NotPermitted,
    RateLimited,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.groups import PERMITTED, Action, Member, Role, permitted, successor
from chatserver.domain.messages import GroupEvent, Kept
from chatserver.domain.users import User
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio

START_MS = 1_795_735_800_000


@define
class FakeClock:
    ms: int = START_MS

    def now_ms(self) -> int:
        return self.ms


async def register(chat: ChatApp, name: str) -> int:
    result = await chat.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def online(chat: ChatApp, user_id: int) -> EmbeddedClient:
    client = chat.connect()
    assert isinstance(await client.request(Login("pw", user_id=user_id)), LoggedIn)
    return client


async def roles(chat: ChatApp, group_id: int) -> dict[int, Role]:
    members = await chat.node.uow.run(lambda tx: tx.groups.members(group_id))
    return {m.user.id: m.role for m in members}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[ChatApp]:
    config = Config(database="memory://", limits=Limits(group_members=5))
    async with bootstrap(config, hasher=FAST_HASHER, clock=clock) as chat:
        yield chat


async def a_group(chat: ChatApp, *names: str) -> tuple[int, list[int], list[EmbeddedClient]]:
    """A group made by the first user, joined by the others in order."""
    ids = [await register(chat, n) for n in names]
    clients = [await online(chat, i) for i in ids]
    created = await clients[0].request(CreateGroup("g-" + "-".join(names)))
    assert isinstance(created, GroupCreated)
    for c in clients[1:]:
        assert isinstance(await c.request(JoinGroup(created.group_id)), GroupJoined)
    return created.group_id, ids, clients


# --- the table --------------------------------------------------------------------------------


def test_the_table_lets_a_role_act_only_on_lower_roles() -> None:
    rank = {Role.CREATOR: 0, Role.ADMIN: 1, Role.NORMAL: 2}
    for (actor, _), targets in PERMITTED.items():
        for target in targets:
            assert target is None or rank[actor] < rank[target]
    assert not any(actor is Role.NORMAL for actor, _ in PERMITTED)
    assert permitted(Role.ADMIN, Action.KICK, Role.NORMAL)
    assert not permitted(Role.ADMIN, Action.KICK, Role.ADMIN)
    assert not permitted(Role.ADMIN, Action.SET_ROLE, Role.NORMAL)
    assert not permitted(Role.ADMIN, Action.DISSOLVE)
    assert permitted(Role.ADMIN, Action.UPDATE)
    assert not permitted(Role.NORMAL, Action.UPDATE)


def test_the_successor_is_the_earliest_admin_else_the_earliest_member() -> None:
    def m(i: int, role: Role) -> Member:
        return Member(User(i, f"u{i}"), role)

    creator = m(1, Role.CREATOR)
    assert successor([creator, m(2, Role.NORMAL), m(3, Role.ADMIN), m(4, Role.ADMIN)], 1) == m(
        3, Role.ADMIN
    )
    assert successor([creator, m(2, Role.NORMAL), m(3, Role.NORMAL)], 1) == m(2, Role.NORMAL)
    assert successor([creator], 1) is None


# --- use cases --------------------------------------------------------------------------------


async def test_a_creator_or_admin_acts_on_lower_roles_only(app: ChatApp) -> None:
    gid, (alice, bob, carol, dave), (ca, cb, cc, _cd) = await a_group(
        app, "alice", "bob", "carol", "dave"
    )
    await ca.request(SetMemberRole(gid, bob, "admin"))
    assert (await roles(app, gid))[bob] is Role.ADMIN
    for client, command in (
        (cc, KickMember(gid, dave)),  # a normal member kicks nobody
        (cb, KickMember(gid, alice)),  # an admin does not kick the creator
        (cb, SetMemberRole(gid, carol, "admin")),  # roles are the creator's
        (cb, TransferGroup(gid, carol)),
        (cb, DissolveGroup(gid)),
        (cb, MuteMember(gid, alice, START_MS + 1000)),
        (cc, UpdateGroup(gid, name="mine")),
        (ca, KickMember(gid, alice)),  # nor does anyone act on themself
        (ca, TransferGroup(gid, alice)),
    ):
        with pytest.raises(NotPermitted):
            await client.request(command)
    await cb.request(KickMember(gid, dave))  # an admin kicks a normal member
    assert set(await roles(app, gid)) == {alice, bob, carol}
    await ca.request(KickMember(gid, bob))  # the creator kicks an admin
    assert set(await roles(app, gid)) == {alice, carol}


async def test_the_errors_of_naming_groups_and_users(app: ChatApp) -> None:
    gid, (_alice, bob), (ca, _cb) = await a_group(app, "alice", "bob")
    stranger = await register(app, "stranger")
    cs = await online(app, stranger)
    with pytest.raises(UnknownGroup):
        await ca.request(KickMember(999, bob))
    with pytest.raises(NotAMember):  # a stranger can do nothing to a group
        await cs.request(KickMember(gid, bob))
    with pytest.raises(NotAMember):
        await cs.request(DissolveGroup(gid))
    with pytest.raises(UnknownUser):
        await ca.request(KickMember(gid, 999))
    with pytest.raises(NotAMember):  # a user who is not a member
        await ca.request(MuteMember(gid, stranger, START_MS + 1))
    with pytest.raises(InvalidRequest):
        await ca.request(SetMemberRole(gid, bob, "creator"))
    with pytest.raises(InvalidRequest):
        await ca.request(UpdateGroup(gid))
    with pytest.raises(InvalidRequest):
        await ca.request(MuteMember(gid, bob, -1))


async def test_transfer_makes_the_member_creator_and_the_old_creator_admin(app: ChatApp) -> None:
    gid, (alice, bob, carol), (ca, _cb, _cc) = await a_group(app, "alice", "bob", "carol")
    await ca.request(TransferGroup(gid, carol))
    assert await roles(app, gid) == {alice: Role.ADMIN, bob: Role.NORMAL, carol: Role.CREATOR}
    with pytest.raises(NotPermitted):
        await ca.request(DissolveGroup(gid))
    with pytest.raises(NotPermitted):  # the new creator is above the admin
        await ca.request(KickMember(gid, carol))


async def test_a_leaving_creator_passes_the_role_to_the_earliest_admin(app: ChatApp) -> None:
    gid, (_alice, bob, carol, dave), (ca, _, cc, cd) = await a_group(
        app, "alice", "bob", "carol", "dave"
    )
    await ca.request(SetMemberRole(gid, dave, "admin"))
    await ca.request(SetMemberRole(gid, carol, "admin"))
    await ca.request(LeaveGroup(gid))
    assert await roles(app, gid) == {bob: Role.NORMAL, carol: Role.CREATOR, dave: Role.ADMIN}
    await cc.request(LeaveGroup(gid))  # no admin but dave, who joined after bob
    assert (await roles(app, gid))[dave] is Role.CREATOR
    await cd.request(SetMemberRole(gid, bob, "normal"))
    await cd.request(LeaveGroup(gid))  # no admin: the earliest member
    assert await roles(app, gid) == {bob: Role.CREATOR}


async def test_a_creator_alone_who_leaves_dissolves_the_group_and_frees_its_name(
    app: ChatApp,
) -> None:
    gid, _, (ca,) = await a_group(app, "alice")
    await ca.request(LeaveGroup(gid))
    with pytest.raises(UnknownGroup):
        await ca.request(JoinGroup(gid))
    again = await ca.request(CreateGroup("g-alice"))
    assert isinstance(again, GroupCreated) and again.group_id != gid


async def test_dissolve_removes_the_group_for_everyone(app: ChatApp) -> None:
    gid, (_, bob), (ca, cb) = await a_group(app, "alice", "bob")
    with pytest.raises(NotPermitted):
        await cb.request(DissolveGroup(gid))
    await ca.request(DissolveGroup(gid))
    with pytest.raises(UnknownGroup):
        await cb.request(SendGroupMessage(gid, "anyone?"))
    relogged = await app.connect().request(Login("pw", user_id=bob))
    assert isinstance(relogged, LoggedIn) and relogged.groups == ()


async def test_a_muted_member_cannot_chat_until_the_clock_passes_until(
    app: ChatApp, clock: FakeClock
) -> None:
    gid, (_alice, bob), (ca, cb) = await a_group(app, "alice", "bob")
    until = START_MS + 60_000
    await ca.request(MuteMember(gid, bob, until))
    with pytest.raises(Muted) as refused:
        await cb.request(SendGroupMessage(gid, "let me speak"))
    assert refused.value.until_ms == until
    clock.ms = until - 1
    with pytest.raises(Muted):
        await cb.request(SendGroupMessage(gid, "now?"))
    clock.ms = until
    await cb.request(SendGroupMessage(gid, "free again"))
    await ca.request(MuteMember(gid, bob, until + 10_000))
    with pytest.raises(Muted):
        await cb.request(SendGroupMessage(gid, "again muted"))
    await ca.request(MuteMember(gid, bob, 0))  # 0 unmutes
    await cb.request(SendGroupMessage(gid, "unmuted"))


async def test_update_renames_and_describes_the_group(app: ChatApp) -> None:
    gid, (_alice, bob), (ca, cb) = await a_group(app, "alice", "bob")
    other = await ca.request(CreateGroup("taken"))
    assert isinstance(other, GroupCreated)
    await ca.request(SetMemberRole(gid, bob, "admin"))
    await cb.request(UpdateGroup(gid, name="renamed"))
    await ca.request(UpdateGroup(gid, description="about us"))
    with pytest.raises(NameTaken):
        await cb.request(UpdateGroup(gid, name="taken"))
    group = await app.node.uow.run(lambda tx: tx.groups.get(gid))
    assert group is not None and (group.name, group.description) == ("renamed", "about us")


async def test_a_full_group_refuses_one_more_member_and_keeps_serving_its_members(
    app: ChatApp,
) -> None:
    gid, _ids, clients = await a_group(app, "m1", "m2", "m3", "m4", "m5")  # the limit: 5
    extra = await register(app, "extra")
    ce = await online(app, extra)
    for _ in range(200):  # the abuse: one more, again and again
        with pytest.raises(NotPermitted):
            await ce.request(JoinGroup(gid))
    again = await clients[4].request(JoinGroup(gid))  # a member joining again is fine
    assert isinstance(again, GroupJoined)
    start = time.perf_counter()
    await clients[1].request(SendGroupMessage(gid, "still served"))
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(f"a member's group message after 200 refused joins: {elapsed_ms:.2f} ms")
    assert len(await roles(app, gid)) == 5
    await clients[4].request(LeaveGroup(gid))
    assert isinstance(await ce.request(JoinGroup(gid)), GroupJoined)


# --- properties -------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["kick", "admin", "normal", "transfer", "leave", "join", "dissolve"]),
        st.integers(0, 3),
        st.integers(0, 3),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ACTIONS)
async def test_every_live_group_has_exactly_one_creator(steps: list[tuple[str, int, int]]) -> None:
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as chat:
        gid, ids, clients = await a_group(chat, "a", "b", "c", "d")
        for what, actor, target in steps:
            client, user = clients[actor], ids[target]
            command = {
                "kick": KickMember(gid, user),
                "admin": SetMemberRole(gid, user, "admin"),
                "normal": SetMemberRole(gid, user, "normal"),
                "transfer": TransferGroup(gid, user),
                "leave": LeaveGroup(gid),
                "join": JoinGroup(gid),
                "dissolve": DissolveGroup(gid),
            }[what]
            with contextlib.suppress(ChatError):
                await client.request(command)
            group = await chat.node.uow.run(lambda tx: tx.groups.get(gid))
            members = await chat.node.uow.run(lambda tx: tx.groups.members(gid))
            if group is None:
                assert members == []
                break
            assert [m.role for m in members].count(Role.CREATOR) == 1, members


# --- GROUP_EVENT ------------------------------------------------------------------------------


def group_events(client: EmbeddedClient, group_id: int | None = None) -> list[GroupEvent]:
    """The GroupEvents pushed to client so far (taken out of its outbox), in order."""
    events = [e.delivery if isinstance(e, Kept) else e for e in client.outbox.events]
    client.outbox.events.clear()
    return [
        e for e in events
        if isinstance(e, GroupEvent) and (group_id is None or e.group_id == group_id)
    ]


def of_group(client: EmbeddedClient, group_id: int) -> list[object]:
    """Everything of the group pushed to client so far (messages and events)."""
    events = [e.delivery if isinstance(e, Kept) else e for e in client.outbox.events]
    return [e for e in events if getattr(e, "group_id", None) == group_id]


async def test_every_change_is_an_event_for_every_member_with_its_fields(app: ChatApp) -> None:
    gid, (alice, bob, carol), clients = await a_group(app, "alice", "bob", "carol")
    ca, cb, _cc = clients
    for c in clients:
        group_events(c)
    await ca.request(SetMemberRole(gid, bob, "admin"))
    await cb.request(MuteMember(gid, carol, START_MS + 5))
    await cb.request(UpdateGroup(gid, name="renamed"))
    await ca.request(TransferGroup(gid, carol))
    seen = [group_events(c, gid) for c in clients]
    assert seen[0] == seen[1] == seen[2]  # the same events, in the same order, for everyone
    assert [
        (e.event, e.user_id, e.by, e.role, e.until, e.group_name) for e in seen[0]
    ] == [
        ("role", bob, alice, "admin", None, None),
        ("muted", carol, bob, None, START_MS + 5, None),
        ("updated", bob, bob, None, None, "renamed"),
        ("transfer", carol, alice, "creator", None, None),
    ]
    assert seen[0][2].group_description == ""
    assert len({e.msg_id for e in seen[0]}) == 4


async def test_a_kicked_member_hears_it_last_and_nothing_of_the_group_afterwards(
    app: ChatApp,
) -> None:
    gid, (alice, bob, carol), (ca, cb, cc) = await a_group(app, "alice", "bob", "carol")
    for c in (ca, cb, cc):
        group_events(c)
    await ca.request(KickMember(gid, carol))
    (kicked,) = group_events(cc, gid)
    assert (kicked.event, kicked.user_id, kicked.by) == ("kicked", carol, alice)
    assert group_events(ca, gid) == group_events(cb, gid) == [kicked]
    await cb.request(SendGroupMessage(gid, "after carol"))
    await ca.request(SetMemberRole(gid, bob, "admin"))
    assert of_group(cc, gid) == []


async def test_a_creator_leaving_gives_transfer_then_left_and_alone_dissolved(
    app: ChatApp,
) -> None:
    gid, (alice, bob), (ca, cb) = await a_group(app, "alice", "bob")
    for c in (ca, cb):
        group_events(c)
    await ca.request(LeaveGroup(gid))
    expected = [("transfer", bob, alice, "creator"), ("left", alice, alice, None)]
    for c in (ca, cb):
        assert [(e.event, e.user_id, e.by, e.role) for e in group_events(c, gid)] == expected
    await cb.request(LeaveGroup(gid))
    assert [(e.event, e.user_id) for e in group_events(cb, gid)] == [("dissolved", bob)]
    assert group_events(ca, gid) == []


async def test_dissolved_reaches_every_member_the_group_had(app: ChatApp) -> None:
    gid, (alice, _, _), clients = await a_group(app, "alice", "bob", "carol")
    for c in clients:
        group_events(c)
    await clients[0].request(DissolveGroup(gid))
    for c in clients:
        assert [(e.event, e.user_id, e.by) for e in group_events(c, gid)] == [
            ("dissolved", alice, alice)
        ]


async def test_events_wait_in_the_inbox_for_a_member_away_and_history_shows_them(
    app: ChatApp,
) -> None:
    gid, (_alice, bob), (ca, cb) = await a_group(app, "alice", "bob")
    await cb.request(Logout())
    await ca.request(SendGroupMessage(gid, "hello"))
    await ca.request(MuteMember(gid, bob, START_MS + 1))
    back = await cb.request(Login("pw", user_id=bob))
    assert isinstance(back, LoggedIn)
    waiting = [k.delivery for k in back.waiting]
    assert [type(d).__name__ for d in waiting] == ["GroupMessage", "GroupEvent"]
    page = await cb.request(History(group_id=gid))
    assert isinstance(page, HistoryPage)
    kinds = [getattr(k.delivery, "event", "message") for k in page.msgs]
    assert kinds == ["joined", "message", "muted"]


async def test_a_legacy_session_is_sent_no_event_and_its_mark_does_not_pass_it(
    app: ChatApp,
) -> None:
    gid, (_alice, bob), (ca, cb) = await a_group(app, "alice", "bob")
    await cb.request(Logout())
    legacy = app.connect()
    result = await legacy.request(Login("pw", user_id=bob, notices=False, device="legacy"))
    assert isinstance(result, LoggedIn)
    await ca.request(MuteMember(gid, bob, START_MS + 1))
    await ca.request(SendGroupMessage(gid, "a chat the legacy client shows"))
    pushed = [e.delivery if isinstance(e, Kept) else e for e in legacy.outbox.events]
    assert [type(e).__name__ for e in pushed] == ["GroupMessage"]
    await legacy.request(Logout())
    # a modern login on that device gets what the legacy one was not sent
    modern = await app.connect().request(Login("pw", user_id=bob, device="legacy"))
    assert isinstance(modern, LoggedIn)
    events = [k.delivery for k in modern.waiting if isinstance(k.delivery, GroupEvent)]
    assert [(e.event, e.until) for e in events] == [("muted", START_MS + 1)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.integers(0, 2), max_size=5),
    after=st.lists(st.integers(0, 1), max_size=5),
)
async def test_property_a_kicked_member_receives_nothing_of_the_group_afterwards(
    before: list[int], after: list[int]
) -> None:
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as chat:
        gid, ids, clients = await a_group(chat, "a", "b", "c")
        for i in before:
            await clients[i].request(SendGroupMessage(gid, f"before {i}"))
        await clients[0].request(KickMember(gid, ids[2]))
        for i in after:
            await clients[i].request(SendGroupMessage(gid, f"after {i}"))
            await clients[0].request(MuteMember(gid, ids[1], 0))
        seen = of_group(clients[2], gid)
        last = seen[-1]
        assert isinstance(last, GroupEvent) and last.event == "kicked"
        assert not any(isinstance(e, GroupEvent) and e.event == "kicked" for e in seen[:-1])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(until_in=st.integers(1, 10_000), waited=st.integers(0, 20_000))
async def test_property_a_muted_member_chats_only_once_the_clock_passes_until(
    until_in: int, waited: int
) -> None:
    clock = FakeClock()
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER, clock=clock) as chat:
        gid, ids, (ca, cb) = await a_group(chat, "a", "b")
        await ca.request(MuteMember(gid, ids[1], START_MS + until_in))
        clock.ms = START_MS + waited
        if waited < until_in:
            with pytest.raises(Muted):
                await cb.request(SendGroupMessage(gid, "too early"))
        else:
            await cb.request(SendGroupMessage(gid, "on time"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def _allowed_group_name(name: str) -> bool:
    from chatserver.domain.errors import InvalidRequest
    from chatserver.domain.groups import check_group_name

    try:
        check_group_name(name)
    except InvalidRequest:
        return False
    return True


@given(
    name=st.text(min_size=1, max_size=50).filter(_allowed_group_name), by_leaving=st.booleans()
)
async def test_property_a_dissolved_groups_name_can_be_taken_again(
    name: str, by_leaving: bool
) -> None:
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as chat:
        alice, bob = await register(chat, "alice"), await register(chat, "bob")
        ca, cb = await online(chat, alice), await online(chat, bob)
        first = await ca.request(CreateGroup(name))
        assert isinstance(first, GroupCreated)
        with pytest.raises(NameTaken):
            await cb.request(CreateGroup(name))
        gid = first.group_id
        await ca.request(LeaveGroup(gid) if by_leaving else DissolveGroup(gid))
        again = await cb.request(CreateGroup(name))
        assert isinstance(again, GroupCreated) and again.group_id != first.group_id


async def test_abuse_group_changes_past_the_limit_are_refused_and_other_members_keep_service(
    clock: FakeClock,
) -> None:
    config = Config(database="memory://", limits=Limits(group_changes_per_minute=60))
    async with bootstrap(config, hasher=FAST_HASHER, clock=clock) as chat:
        gid, (_, bob), (ca, cb) = await a_group(chat, "alice", "bob")
        spammer = await register(chat, "spammer")
        cs = await online(chat, spammer)
        # Joining and leaving tells every member each time: the abuse is doing it at full speed.
        refused = 0
        for i in range(200):
            try:
                await cs.request(JoinGroup(gid) if i % 2 == 0 else LeaveGroup(gid))
            except RateLimited:
                refused += 1
        assert refused == 200 - 60
        events = [e for e in group_events(cb, gid) if e.user_id == spammer]
        assert len(events) == 60  # every change told, and no more than the limit
        start = time.perf_counter()
        await ca.request(SetMemberRole(gid, bob, "admin"))
        await cb.request(SendGroupMessage(gid, "still served"))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        print(f"a change and a message beside a spammer refused 140 times: {elapsed_ms:.2f} ms")
        clock.ms += 61_000  # a minute later the spammer may change again
        await cs.request(JoinGroup(gid))
