"""Several nodes in one process, sharing a hub and a database: what crosses between nodes."""

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatserver.adapters.memory.cluster import InProcessHub
from chatserver.application.commands import (
    AccountChange,
    AddFriend,
    AnswerFriend,
    BlockUser,
    CreateGroup,
    JoinGroup,
    LeaveGroup,
    Login,
    Receipt,
    Register,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
)
from chatserver.application.node import Limits
from chatserver.application.results import GroupCreated, LoggedIn, MessageAccepted, Registered
from chatserver.domain.errors import NotAMember, NotPermitted, RateLimited
from chatserver.domain.messages import (
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRemovedNotice,
    GroupEvent,
    GroupMessage,
    Kept,
    KickedNotice,
    PresenceNotice,
)
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio


def unwrap(event: Event) -> Event:
    """A delivery comes at its place in the user's inbox: the delivery itself."""
    return event.delivery if isinstance(event, Kept) else event


def config(database: str, node_id: str, bus: str = "memory://") -> Config:
    return Config(database=database, bus=bus, node_id=node_id, limits=Limits())


@pytest.fixture
def hub() -> InProcessHub:
    return InProcessHub()


@pytest.fixture
async def nodes(tmp_path: Path, hub: InProcessHub) -> AsyncIterator[tuple[ChatApp, ChatApp]]:
    """Two nodes on one database; tests/integration/test_redis_cluster.py swaps the bus."""
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    async with (
        bootstrap(config(url, "a"), hub=hub, hasher=FAST_HASHER) as a,
        bootstrap(config(url, "b"), hub=hub, hasher=FAST_HASHER) as b,
    ):
        yield a, b


@pytest.fixture
async def three_nodes(
    tmp_path: Path, hub: InProcessHub
) -> AsyncIterator[tuple[ChatApp, ChatApp, ChatApp]]:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    async with (
        bootstrap(config(url, "a"), hub=hub, hasher=FAST_HASHER) as a,
        bootstrap(config(url, "b"), hub=hub, hasher=FAST_HASHER) as b,
        bootstrap(config(url, "c"), hub=hub, hasher=FAST_HASHER) as c,
    ):
        yield a, b, c


@pytest.fixture
def kill(hub: InProcessHub) -> Callable[[ChatApp], None]:
    """Make a node vanish from the cluster without a word, as SIGKILL would."""
    return lambda app: hub.detach(app.node.node_id)


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until check() holds: over a real bus, confirmations take a moment to come back."""
    with anyio.fail_after(seconds):
        while not check():  # noqa: ASYNC110  (polled state that no event announces)
            await anyio.sleep(0.01)


async def register(app: ChatApp, name: str) -> int:
    result = await app.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def befriend(
    asker: EmbeddedClient, asker_id: int, asked: EmbeddedClient, asked_id: int
) -> None:
    """asker asks asked to be friends, and asked accepts."""
    await asker.request(AddFriend(asked_id))
    unwrap(await asked.next_event())  # the request
    await asked.request(AnswerFriend(asker_id, accept=True))


async def online(app: ChatApp, user_id: int, *, receipts: bool = False) -> EmbeddedClient:
    client = app.connect()
    assert isinstance(await client.request(Login("pw", user_id, receipts=receipts)), LoggedIn)
    return client


async def test_chat_crosses_nodes(nodes: tuple[ChatApp, ChatApp]) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(b, "bob")
    ca, cb = await online(a, alice), await online(b, bob)
    sent = await ca.request(SendDirectMessage(bob, "across"))
    got = unwrap(await cb.next_event())
    assert isinstance(sent, MessageAccepted) and isinstance(got, DirectMessage)
    assert (got.msg_id, got.text) == (sent.msg_id, "across")


async def test_a_login_on_another_node_kicks_the_older_session(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    old = await online(a, bob, receipts=True)
    sent = await ca.request(SendDirectMessage(bob, "to the old session"))
    assert isinstance(sent, MessageAccepted)
    new = b.connect()
    result = await new.request(Login("pw", bob, receipts=True))
    assert isinstance(result, LoggedIn)
    assert [m.delivery.msg_id for m in result.waiting] == [sent.msg_id]
    assert isinstance(old.outbox.events[-1], KickedNotice)
    await ca.request(SendDirectMessage(bob, "now on b"))
    got = unwrap(await new.next_event())
    assert isinstance(got, DirectMessage) and got.text == "now on b"


async def test_presence_and_friend_answers_cross_nodes(nodes: tuple[ChatApp, ChatApp]) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca, cb = await online(a, alice), await online(b, bob)
    await befriend(ca, alice, cb, bob)
    # The answer and bob's state (the friendship started) arrive, in either order across nodes.
    got = [unwrap(await ca.next_event()), unwrap(await ca.next_event())]
    (answer,) = [e for e in got if isinstance(e, FriendAnswer)]
    assert answer.accepted and PresenceNotice(bob, True) in got
    assert unwrap(await cb.next_event()) == PresenceNotice(alice, True)
    await cb.close()
    assert unwrap(await ca.next_event()) == PresenceNotice(bob, False)
    await ca.request(RemoveFriend(bob))
    assert unwrap(await ca.next_event()) == FriendRemovedNotice(bob)
    cb = await online(b, bob)
    await anyio.sleep(0.2)
    assert ca.outbox.events == []  # no longer friends: no presence


async def test_friend_removed_reaches_every_device_on_both_nodes(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca, cb = await online(a, alice), await online(b, bob)
    await befriend(ca, alice, cb, bob)
    ca_phone = b.connect()
    assert isinstance(await ca_phone.request(Login("pw", alice, device="phone")), LoggedIn)
    await anyio.sleep(0.1)
    ca.outbox.events.clear()
    cb.outbox.events.clear()
    await cb.request(RemoveFriend(alice))
    for client, other in ((ca, bob), (ca_phone, bob), (cb, alice)):
        assert unwrap(await client.next_event()) == FriendRemovedNotice(other)


async def next_chat(client: EmbeddedClient) -> Event:
    """The next event that is not a GroupEvent (joins and leaves are told as GROUP_EVENTs)."""
    while True:
        event = unwrap(await client.next_event())
        if not isinstance(event, GroupEvent):
            return event


async def test_group_membership_changes_reach_other_nodes(nodes: tuple[ChatApp, ChatApp]) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca, cb = await online(a, alice), await online(b, bob)
    created = await ca.request(CreateGroup("g"))
    assert isinstance(created, GroupCreated)
    gid = created.group_id
    await ca.request(SendGroupMessage(gid, "warm the roster cache on a"))
    await cb.request(JoinGroup(gid))
    await ca.request(SendGroupMessage(gid, "hello bob"))
    got = await next_chat(cb)
    assert isinstance(got, GroupMessage) and got.text == "hello bob"
    await cb.request(SendGroupMessage(gid, "warm it on b"))
    await next_chat(ca)
    await ca.request(LeaveGroup(gid))
    await anyio.sleep(0.1)
    ca.outbox.events.clear()  # the GROUP_EVENTs of alice's leaving (transfer, left)
    with pytest.raises(NotAMember):
        await ca.request(SendGroupMessage(gid, "gone"))
    await cb.request(SendGroupMessage(gid, "nobody left to hear"))
    await anyio.sleep(0.2)
    assert ca.outbox.events == []


async def test_a_message_acknowledged_before_the_recipients_node_died_waits_at_next_login(
    nodes: tuple[ChatApp, ChatApp], kill: Callable[[ChatApp], None]
) -> None:
    """The ACK means the message is in the recipient's inbox: a node dying loses nothing,
    and what the device receipted (its mark is kept at each receipt) does not come again."""
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    cb = await online(b, bob, receipts=True)
    receipted = await ca.request(SendDirectMessage(bob, "receipted"))
    in_flight = await ca.request(SendDirectMessage(bob, "in flight when b died"))
    assert isinstance(receipted, MessageAccepted) and isinstance(in_flight, MessageAccepted)
    await cb.request(Receipt((receipted.msg_id,)))

    kill(b)
    result = await a.connect().request(Login("pw", bob, receipts=True))
    assert isinstance(result, LoggedIn)
    assert [m.delivery.msg_id for m in result.waiting] == [in_flight.msg_id]


async def test_messages_for_a_user_who_left_the_other_node_are_stored_there(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    cb = await online(b, bob, receipts=True)
    sent = await ca.request(SendDirectMessage(bob, "unreceipted at logout"))
    assert isinstance(sent, MessageAccepted)
    await cb.close()
    result = await a.connect().request(Login("pw", bob))
    assert isinstance(result, LoggedIn)
    assert [m.delivery.msg_id for m in result.waiting] == [sent.msg_id]


async def test_a_message_follows_a_user_who_moved_since_the_sender_looked(
    three_nodes: tuple[ChatApp, ChatApp, ChatApp],
) -> None:
    """Node a remembers bob on b; bob moves to c, which tells every node to look bob up
    again: the next message goes straight to c, live."""
    a, b, c = three_nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    on_b = await online(b, bob)
    await ca.request(SendDirectMessage(bob, "to b"))
    assert isinstance(unwrap(await on_b.next_event()), DirectMessage)
    await on_b.close()
    on_c = await online(c, bob, receipts=True)

    sent = await ca.request(SendDirectMessage(bob, "to wherever bob is"))
    assert isinstance(sent, MessageAccepted)
    with anyio.fail_after(5):
        got = unwrap(await on_c.next_event())
    assert isinstance(got, DirectMessage) and (got.msg_id, got.text) == (
        sent.msg_id, "to wherever bob is"
    )


async def test_a_notice_follows_a_user_who_moved(
    three_nodes: tuple[ChatApp, ChatApp, ChatApp],
) -> None:
    a, b, c = three_nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    on_b = await online(b, bob)
    await ca.request(AddFriend(bob))
    await on_b.request(AnswerFriend(alice, True))
    await ca.request(SendDirectMessage(bob, "a remembers bob on b"))
    await on_b.close()
    on_c = await online(c, bob)
    on_c.outbox.events.clear()
    await ca.close()  # alice goes offline: her friends hear it
    with anyio.fail_after(5):
        while True:
            event = unwrap(await on_c.next_event())
            if isinstance(event, PresenceNotice):
                break
    assert (event.user_id, event.online) == (alice, False)


class CountingBus:
    """A node's bus, counting what it hands to other nodes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[tuple[str, list[int], Event]] = []

    async def deliver(
        self,
        node_id: str,
        user_ids: Sequence[int],
        event: Event,
        positions: Sequence[int] | None = None,
    ) -> bool:
        self.sent.append((node_id, list(user_ids), event))
        return bool(await self.inner.deliver(node_id, user_ids, event, positions))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_group_messages_copies_for_one_node_travel_as_one(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice = await register(a, "alice")
    members = [await register(a, f"member{n}") for n in range(5)]
    ca = await online(a, alice)
    created = await ca.request(CreateGroup("g"))
    assert isinstance(created, GroupCreated)
    on_b = [await online(b, m, receipts=True) for m in members]
    for client in on_b:
        await client.request(JoinGroup(created.group_id))
    bus = CountingBus(a.node.router.bus)
    a.node.router.bus = bus

    sent = await ca.request(SendGroupMessage(created.group_id, "to five on b"))
    assert isinstance(sent, MessageAccepted)
    assert [(node, sorted(users)) for node, users, _ in bus.sent] == [(b.node.node_id, members)]
    for client in on_b:
        got = await next_chat(client)
        assert isinstance(got, GroupMessage) and got.msg_id == sent.msg_id



async def test_one_device_too_many_on_another_node_ends_the_oldest_and_frees_its_place(
    nodes: tuple[ChatApp, ChatApp], hub: InProcessHub
) -> None:
    a, b = nodes
    alice = await register(a, "alice")
    first = a.connect()
    assert isinstance(await first.request(Login("pw", alice, device="d0")), LoggedIn)
    for i in range(1, 8):
        assert isinstance(await a.connect().request(Login("pw", alice, device=f"d{i}")), LoggedIn)
    ninth = b.connect()
    assert isinstance(await ninth.request(Login("pw", alice, device="d8")), LoggedIn)
    assert isinstance(first.outbox.events[-1], KickedNotice)
    assert sorted(hub.locations[alice]) == [f"d{i}" for i in range(1, 9)]
    assert len(a.node.sessions.of(alice)) == 7 and len(b.node.sessions.of(alice)) == 1


async def test_a_device_taken_over_on_another_node_stays_online_there(
    nodes: tuple[ChatApp, ChatApp], hub: InProcessHub
) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca = await online(a, alice)
    cb = await online(b, bob)
    await ca.request(AddFriend(bob))
    await cb.request(AnswerFriend(alice, True))
    cb.outbox.events.clear()
    again = a.connect()
    assert isinstance(await again.request(Login("pw", bob)), LoggedIn)  # bob's device moves
    assert hub.locations[bob]["default"].node_id == a.node.node_id
    assert not [e for e in ca.outbox.events if isinstance(e, PresenceNotice) and not e.online]


async def test_a_block_reaches_the_blocked_users_sessions_on_another_node(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca, cb = await online(a, alice), await online(b, bob)
    await ca.request(BlockUser(bob, block=True))
    with pytest.raises(NotPermitted):
        await cb.request(SendDirectMessage(alice, "refused on bob's own node"))
    await ca.request(BlockUser(bob, block=False))
    assert isinstance(await cb.request(SendDirectMessage(alice, "again")), MessageAccepted)


async def test_a_password_change_ends_the_users_sessions_on_another_node(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    a, b = nodes
    alice = await register(a, "alice")
    here = await online(a, alice)
    there = b.connect()
    assert isinstance(await there.request(Login("pw", alice, device="phone")), LoggedIn)
    await here.request(AccountChange("password", "pw", "new secret"))
    assert isinstance(unwrap(await there.next_event()), KickedNotice)
    assert isinstance(await here.request(SendDirectMessage(alice, "still on")), MessageAccepted)


async def test_two_sessions_ending_at_once_on_two_nodes_still_say_offline(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    """alice on a device at each node, both closed at the same moment, 10 times: each time her
    friend hears exactly one offline PRESENCE (neither node thinks the other still has her)."""
    a, b = nodes
    alice, bob = await register(a, "alice"), await register(a, "bob")
    ca, cb = await online(a, alice), await online(a, bob)
    await befriend(ca, alice, cb, bob)
    await ca.close()
    await anyio.sleep(0.2)
    cb.outbox.events.clear()
    for _ in range(10):
        pc, phone = a.connect(), b.connect()
        assert isinstance(await pc.request(Login("pw", alice, device="pc")), LoggedIn)
        assert isinstance(await phone.request(Login("pw", alice, device="phone")), LoggedIn)
        assert unwrap(await cb.next_event()) == PresenceNotice(alice, True)
        async with anyio.create_task_group() as closing:
            closing.start_soon(pc.close)
            closing.start_soon(phone.close)
        assert unwrap(await cb.next_event()) == PresenceNotice(alice, False)
        await anyio.sleep(0.05)
        assert cb.outbox.events == []  # one offline, and no second online
# Strangers' messages per recipient, for the whole cluster: a burst of 10 (and 1 a minute).
STRANGER_LIMITS = Limits(stranger_messages_burst=10, stranger_messages_per_minute=1,
                         stranger_stored_share=0)


@asynccontextmanager
async def stranger_limited_nodes(
    url: str, bus: str = "memory://", hub: InProcessHub | None = None
) -> AsyncIterator[tuple[ChatApp, ChatApp]]:
    def limited(node_id: str) -> Config:
        return Config(database=url, bus=bus, node_id=node_id, limits=STRANGER_LIMITS)

    async with (
        bootstrap(limited("a"), hub=hub, hasher=FAST_HASHER) as a,
        bootstrap(limited("b"), hub=hub, hasher=FAST_HASHER) as b,
    ):
        yield a, b


async def strangers_spread_over_two_nodes(a: ChatApp, b: ChatApp) -> None:
    """Issue 16.6, in a cluster: the strangers' rate per recipient was each node's, so
    strangers on N nodes got N times it through. Each node now enforces its share, 1/N, told
    by the bus how many nodes there are: the cluster lets through the rate, not twice it. The
    recipient's friend is not refused, and the figures are printed."""
    await eventually(lambda: a.node.strangers.per_recipient.share == 0.5
                     and b.node.strangers.per_recipient.share == 0.5, 15.0)
    victim, friend = await register(a, "victim"), await register(a, "friend")
    cv, cf = await online(a, victim), await online(b, friend)
    await cf.request(AddFriend(victim))
    unwrap(await cv.next_event())  # the request
    await cv.request(AnswerFriend(friend, accept=True))
    await cv.close()  # away: strangers' messages are counted (not taken live)
    strangers = [await register(node, f"stranger{n}") for n, node in enumerate([a, a, b, b])]
    clients = [await online(node, s) for node, s in zip([a, a, b, b], strangers, strict=True)]
    outcomes: list[str] = []
    for client in clients:
        for n in range(5):
            try:
                await client.request(SendDirectMessage(victim, f"spam {n}"))
                outcomes.append("kept")
            except RateLimited:
                outcomes.append("errno 9")
    started = time.perf_counter()
    assert isinstance(await cf.request(SendDirectMessage(victim, "are you there?")),
                      MessageAccepted)
    print(f"20 strangers' messages over two nodes: {outcomes.count('kept')} kept, "
          f"{outcomes.count('errno 9')} errno 9; the friend's message kept in "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")
    assert outcomes.count("kept") == 10  # the burst, for the cluster (was 10 on each node)


async def test_strangers_spread_over_two_nodes_get_the_clusters_rate(
    tmp_path: Path, hub: InProcessHub
) -> None:
    async with stranger_limited_nodes(f"sqlite:///{tmp_path / 'cluster.db'}", hub=hub) as (a, b):
        await strangers_spread_over_two_nodes(a, b)


async def test_nodes_of_one_hub_left_at_the_default_node_id_still_form_a_cluster(
    tmp_path: Any,
) -> None:
    """QA: README's "several open_node() calls given the same hub form a cluster", followed
    literally (two Configs with the default node_id, the host name and pid): the hub took the
    second node for the first, and a chat between their users never arrived."""
    import chatserver

    url = f"sqlite:///{tmp_path / 'chat.db'}"
    hub = chatserver.InProcessHub()
    async with (
        chatserver.open_node(chatserver.Config(database=url), hub=hub) as one,
        chatserver.open_node(chatserver.Config(database=url), hub=hub) as two,
    ):
        assert one.node.node_id != two.node.node_id
        alice, bob = one.connect(), two.connect()
        alice_id = (await alice.request(chatserver.Register("alice", "pw"))).user_id
        bob_id = (await bob.request(chatserver.Register("bob", "pw"))).user_id
        await alice.request(chatserver.Login("pw", user_id=alice_id))
        await bob.request(chatserver.Login("pw", user_id=bob_id))
        await alice.request(chatserver.SendDirectMessage(bob_id, "across the hub"))
        with anyio.fail_after(5):
            assert (await bob.next_event()).delivery.text == "across the hub"
