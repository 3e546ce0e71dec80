"""Devices, the inbox, SYNC, HISTORY and READ through the core's own entry point, on in-memory
adapters, one node or two in one process."""

import pytest

from chatserver.adapters.memory.cluster import InProcessHub
from chatserver.application.commands import (
    History,
    Login,
    Read,
    Receipt,
    Register,
    SendDirectMessage,
)
from chatserver.application.inbound import NodeInbox
from chatserver.application.node import Limits
from chatserver.application.results import HistoryPage, LoggedIn, MessageAccepted, Registered
from chatserver.domain.messages import Kept, ReadNotice
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio


async def register(chat: ChatApp, name: str) -> int:
    result = await chat.connect().request(Register(name, "pw"))
    assert isinstance(result, Registered)
    return result.user_id


async def on(chat: ChatApp, user_id: int, device: str = "default") -> EmbeddedClient:
    client = chat.connect()
    result = await client.request(Login("pw", user_id=user_id, device=device))
    assert isinstance(result, LoggedIn)
    return client


async def test_read_is_kept_at_most_at_the_newest_pos_and_reaches_a_device_on_another_node(
) -> None:
    hub = InProcessHub()
    async with (
        bootstrap(Config(database="memory://", node_id="a"), hub=hub, hasher=FAST_HASHER) as a,
        bootstrap(Config(database="memory://", node_id="b"), hub=hub, hasher=FAST_HASHER) as b,
    ):
        alice = await register(a, "alice")
        # one database per node here: alice exists on b too
        assert await register(b, "alice") == alice
        pc, phone = await on(a, alice, "pc"), await on(b, alice, "phone")
        await pc.request(SendDirectMessage(alice, "note"))  # pos 1 in a's inbox of alice
        await pc.request(Read(99))
        assert phone.outbox.events[-1] == ReadNotice(1)  # clamped to the newest pos
        assert pc.outbox.events == []


async def test_history_with_yourself_holds_your_notes_once(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    pc = await on(chat, alice, "pc")
    sent = await pc.request(SendDirectMessage(alice, "note to self"))
    assert isinstance(sent, MessageAccepted) and sent.pos == 1
    page = await pc.request(History(with_user=alice))
    assert isinstance(page, HistoryPage)
    assert [(k.pos, k.delivery.msg_id) for k in page.msgs] == [(1, sent.msg_id)]


async def test_after_a_bus_outage_each_session_reads_what_its_inbox_got_meanwhile(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    cb = await on(chat, bob)

    def keep_without_pushing(tx):  # type: ignore[no-untyped-def]
        from chatserver.domain.messages import DirectMessage

        message = DirectMessage(77, alice, "alice", bob, "sent while the bus was down", 0)
        return tx.inbox.append([(bob, message), (bob, message)], 0)

    assert await chat.node.uow.run(keep_without_pushing) == [1, 2]
    assert cb.outbox.events == []
    await NodeInbox(chat.node).catch_up()
    assert [e.pos for e in cb.outbox.events if isinstance(e, Kept)] == [1, 2]


async def test_what_a_session_without_receipts_could_not_write_comes_at_its_next_login(
    chat: ChatApp,
) -> None:
    from chatserver.application.commands import Logout

    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    ca, cb = await on(chat, alice), await on(chat, bob)
    cb.outbox.limit = 1  # bob's client takes one push, then is too far behind
    for text in ("written", "not written", "nor this"):
        await ca.request(SendDirectMessage(bob, text))
    assert [e.pos for e in cb.outbox.events if isinstance(e, Kept)] == [1]
    await cb.request(Logout())
    again = await cb.request(Login("pw", user_id=bob))
    assert isinstance(again, LoggedIn)
    assert [k.pos for k in again.waiting] == [2, 3]


async def test_a_flood_waits_for_receipts_instead_of_disconnecting_a_client_that_keeps_up(
) -> None:
    """Issue 16.5: strangers sending faster than a receipting client can receipt made the
    unreceipted bound end its session, again and again. Past the bound the rest now waits, in
    order, until the client receipts: nothing is lost, nothing comes twice, nobody is cut off."""
    limits = Limits(unreceipted_per_session=5)
    async with bootstrap(
        Config(database="memory://", node_id="a", limits=limits), hasher=FAST_HASHER
    ) as chat:
        victim, flooder = await register(chat, "victim"), await register(chat, "flooder")
        client = chat.connect()
        assert isinstance(
            await client.request(Login("pw", user_id=victim, receipts=True)), LoggedIn
        )
        sender = await on(chat, flooder)
        for n in range(23):
            await sender.request(SendDirectMessage(victim, f"flood {n}"))
        seen: list[int] = []
        while len(seen) < 23:
            batch = [e for e in client.outbox.events if isinstance(e, Kept)]
            client.outbox.events.clear()
            assert 0 < len(batch) <= 5, f"{len(batch)} unreceipted at once after {seen}"
            seen += [k.pos for k in batch]
            await client.request(Receipt(tuple(k.delivery.msg_id for k in batch)))
        assert seen == list(range(1, 24))
        assert not client.outbox.closed
