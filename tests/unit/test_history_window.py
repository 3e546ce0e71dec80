"""The history window (--history-days): old inbox entries are pruned in the background in small
batches; 0 keeps version 1's behaviour (nothing kept once every device of the user had it).
Time is a fake clock, moved by the test."""

import pytest
from attrs import define

from chatserver.application.commands import (
    History,
    Login,
    Logout,
    Register,
    SendDirectMessage,
    Sync,
)
from chatserver.application.node import Limits
from chatserver.application.pruning import DAY_MS, prune_once
from chatserver.application.results import HistoryPage, LoggedIn, Registered, Synced
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio

START_MS = 1_795_735_800_000


@define
class FakeClock:
    ms: int = START_MS

    def now_ms(self) -> int:
        return self.ms


async def user(chat: ChatApp, name: str) -> int:
    result = await chat.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def on(chat: ChatApp, user_id: int, device: str = "default") -> EmbeddedClient:
    client = chat.connect()
    assert isinstance(await client.request(Login("pw", user_id=user_id, device=device)), LoggedIn)
    return client


async def synced(client: EmbeddedClient, since: int = 0) -> Synced:
    result = await client.request(Sync(since, 500))
    assert isinstance(result, Synced)
    return result


async def test_messages_older_than_the_window_are_pruned_in_small_batches() -> None:
    clock = FakeClock()
    config = Config(database="memory://", limits=Limits(history_days=30))
    async with bootstrap(config, hasher=FAST_HASHER, clock=clock) as chat:
        alice, bob = await user(chat, "alice"), await user(chat, "bob")
        ca, cb = await on(chat, alice), await on(chat, bob)
        for i in range(5):
            await ca.request(SendDirectMessage(bob, f"old {i}"))
        clock.ms += 29 * DAY_MS
        await ca.request(SendDirectMessage(bob, "recent"))
        assert await prune_once(chat.node.uow, clock, 30) == 0  # nothing is 30 days old yet

        clock.ms += 2 * DAY_MS
        batches = []
        real_run = chat.node.uow.run

        async def counted(work):  # type: ignore[no-untyped-def]
            batches.append(work)
            return await real_run(work)

        chat.node.uow.run = counted  # type: ignore[method-assign]
        gone = await prune_once(chat.node.uow, clock, 30, batch=2)
        chat.node.uow.run = real_run  # type: ignore[method-assign]
        assert gone == 10  # 5 messages, each in bob's inbox and in alice's
        assert len(batches) == 6  # 2 entries per transaction, then one that finds none

        result = await synced(cb)
        assert [k.delivery.text for k in result.msgs] == ["recent"]  # type: ignore[union-attr]
        assert (result.last_pos, result.truncated) == (6, True)
        assert [k.pos for k in result.msgs] == [6]  # positions are never reused
        page = await cb.request(History(with_user=alice))
        assert isinstance(page, HistoryPage) and [k.pos for k in page.msgs] == [6]
        assert not page.more


async def test_a_window_of_0_keeps_only_what_a_device_still_waits_for() -> None:
    config = Config(database="memory://", limits=Limits(history_days=0))
    async with bootstrap(config, hasher=FAST_HASHER, clock=FakeClock()) as chat:
        alice, bob = await user(chat, "alice"), await user(chat, "bob")
        ca = await on(chat, alice)
        pc, phone = await on(chat, bob, "pc"), await on(chat, bob, "phone")
        await phone.request(Logout())  # the phone's mark stays at 0
        await ca.request(SendDirectMessage(bob, "to bob"))
        await pc.request(Logout())  # the pc had it; the phone still waits for it
        reader = await on(chat, bob, "pc")
        assert [k.pos for k in (await synced(reader)).msgs] == [1]
        await reader.request(Logout())
        phone = await on(chat, bob, "phone")
        assert [k.pos for k in (await chat.node.uow.run(
            lambda tx: tx.inbox.after(bob, 0, 10)))] == [1]
        await phone.request(Logout())  # every device of bob's has had it: it goes
        assert await chat.node.uow.run(lambda tx: tx.inbox.after(bob, 0, 10)) == []
        assert await prune_once(chat.node.uow, FakeClock(START_MS + 400 * DAY_MS), 0) == 0
