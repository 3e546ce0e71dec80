"""Issue 13.4: a requester who was declined may ask the one who declined again once a day
(errno 9 before that), so friend requests cannot be used to pester; on the node's clock."""

import time
from collections.abc import AsyncIterator

import pytest
from attrs import define

from chatserver.application.commands import AddFriend, AnswerFriend, BlockUser, RemoveFriend
from chatserver.application.results import Done
from chatserver.domain.errors import RateLimited
from chatserver.domain.friends import (
    ASK_AGAIN_AFTER_DECLINE_MS,
    RequestOutcome,
    outcome_of_request,
)
from chatserver.domain.messages import FriendAnswer, FriendRequestNotice
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER
from tests.unit.test_use_cases import online, register, unwrap

pytestmark = pytest.mark.anyio

START_MS = 1_795_735_800_000
DAY_MS = 86_400_000


@define
class FakeClock:
    ms: int = START_MS

    def now_ms(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[ChatApp]:
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER, clock=clock) as chat:
        yield chat


# --- the rule, pure ---------------------------------------------------------------------------


def test_a_day_is_the_wait() -> None:
    assert ASK_AGAIN_AFTER_DECLINE_MS == DAY_MS


@pytest.mark.parametrize(
    ("waited_ms", "refused"), [(0, True), (1, True), (DAY_MS - 1, True), (DAY_MS, False)]
)
def test_a_new_request_within_a_day_of_a_decline_is_refused(waited_ms: int, refused: bool) -> None:
    def ask() -> RequestOutcome:
        return outcome_of_request(
            1,
            2,
            are_friends=False,
            they_asked_first=False,
            declined_at_ms=5_000,
            now_ms=5_000 + waited_ms,
        )

    if refused:
        with pytest.raises(RateLimited, match="declined your request"):
            ask()
    else:
        assert ask() is RequestOutcome.SENT


def test_a_decline_never_refuses_what_is_not_a_new_request() -> None:
    for are_friends, they_asked, expected in (
        (True, False, RequestOutcome.ALREADY_FRIENDS),
        (False, True, RequestOutcome.ACCEPTS_THEIRS),
    ):
        outcome = outcome_of_request(
            1,
            2,
            are_friends=are_friends,
            they_asked_first=they_asked,
            declined_at_ms=5_000,
            now_ms=5_000,
        )
        assert outcome is expected
    assert outcome_of_request(1, 2, are_friends=False, they_asked_first=False) is (
        RequestOutcome.SENT
    )


# --- on the node ------------------------------------------------------------------------------


async def declined(chat: ChatApp) -> tuple[int, int, EmbeddedClient, EmbeddedClient]:
    """alice asked bob, bob declined; both online, their events read."""
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    assert isinstance(await a.request(AddFriend(bob)), Done)
    assert unwrap(await b.next_event()) == FriendRequestNotice(alice, "alice")
    await b.request(AnswerFriend(alice, accept=False))
    answer = unwrap(await a.next_event())
    assert isinstance(answer, FriendAnswer) and not answer.accepted
    return alice, bob, a, b


async def no_events(*clients: EmbeddedClient) -> None:
    for client in clients:
        await client.outbox.flush()
        assert client.outbox.events == []


async def test_asking_again_within_a_day_is_errno_9_and_reaches_nobody(
    app: ChatApp, clock: FakeClock
) -> None:
    alice, bob, a, b = await declined(app)
    with pytest.raises(RateLimited):
        await a.request(AddFriend(bob))
    clock.ms += DAY_MS - 1
    with pytest.raises(RateLimited):
        await a.request(AddFriend(bob))
    await no_events(a, b)
    assert await app.node.uow.run(lambda tx: tx.friends.requesters_of(bob)) == []
    clock.ms += 1
    assert isinstance(await a.request(AddFriend(bob)), Done)
    assert unwrap(await b.next_event()) == FriendRequestNotice(alice, "alice")


async def test_the_one_who_declined_may_ask_at_once_and_be_accepted(
    app: ChatApp, clock: FakeClock
) -> None:
    alice, bob, a, b = await declined(app)
    assert isinstance(await b.request(AddFriend(alice)), Done)
    assert unwrap(await a.next_event()) == FriendRequestNotice(bob, "bob")
    # alice's request now answers bob's: not a new request, so not refused
    assert isinstance(await a.request(AddFriend(bob)), Done)
    assert await app.node.uow.run(lambda tx: tx.friends.are_friends(alice, bob))


async def test_a_friendship_forgets_the_decline(app: ChatApp, clock: FakeClock) -> None:
    alice, bob, a, b = await declined(app)
    await b.request(AddFriend(alice))
    await a.request(AnswerFriend(bob, accept=True))
    await a.request(RemoveFriend(bob))
    a.outbox.events.clear()
    b.outbox.events.clear()
    assert isinstance(await a.request(AddFriend(bob)), Done)  # the same day
    await b.outbox.flush()
    assert FriendRequestNotice(alice, "alice") in [unwrap(e) for e in b.outbox.events]


async def test_a_block_still_wins_over_a_decline(app: ChatApp, clock: FakeClock) -> None:
    alice, bob, a, b = await declined(app)
    await b.request(BlockUser(alice, block=True))
    # blocked: errno 0 and it reaches nobody, as for any blocked user's request (not errno 9)
    assert isinstance(await a.request(AddFriend(bob)), Done)
    await no_events(a, b)


async def test_pestering_is_refused_and_others_still_reach_the_victim(
    app: ChatApp, clock: FakeClock
) -> None:
    _alice, bob, a, b = await declined(app)
    carol = await register(app, "carol")
    c = await online(app, carol)
    attempts, refused = 1_000, 0
    started = time.perf_counter()
    for _ in range(attempts):
        try:
            await a.request(AddFriend(bob))
        except RateLimited:
            refused += 1
    pester_s = time.perf_counter() - started
    assert refused == attempts
    await no_events(b)
    started = time.perf_counter()
    assert isinstance(await c.request(AddFriend(bob)), Done)
    assert unwrap(await b.next_event()) == FriendRequestNotice(carol, "carol")
    latency_ms = (time.perf_counter() - started) * 1000
    print(
        f"\n{attempts} pestering requests refused in {pester_s * 1000:.0f} ms"
        f" ({pester_s / attempts * 1e6:.0f} us each); carol's request reached bob in"
        f" {latency_ms:.2f} ms"
    )
    assert latency_ms < 1_000
