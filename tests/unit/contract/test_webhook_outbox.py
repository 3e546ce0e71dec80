"""The WebhookOutbox contract: rows kept in order with their transaction, one delivering lease."""

import pytest

from chatserver.domain.ports import Transaction, UnitOfWork, WebhookRow

pytestmark = pytest.mark.anyio


async def test_rows_come_back_oldest_first_and_go_once_deleted(uow: UnitOfWork) -> None:
    rows = [("users:1:2", '{"n":1}'), ("group:7", '{"n":2}'), ("users:1:2", '{"n":3}')]
    await uow.run(lambda tx: tx.webhooks.add(rows, 1_000))
    await uow.run(lambda tx: tx.webhooks.add([("group:7", '{"n":4}')], 2_000))

    pending = await uow.run(lambda tx: tx.webhooks.pending(10))
    assert [(r.conversation, r.body, r.created_ms) for r in pending] == [
        *((c, b, 1_000) for c, b in rows),
        ("group:7", '{"n":4}', 2_000),
    ]
    assert [r.id for r in pending] == sorted(r.id for r in pending)
    assert await uow.run(lambda tx: tx.webhooks.stats()) == (4, 1_000)

    await uow.run(lambda tx: tx.webhooks.delete([pending[0].id, pending[2].id]))
    left = await uow.run(lambda tx: tx.webhooks.pending(10))
    assert left == [pending[1], pending[3]]
    assert await uow.run(lambda tx: tx.webhooks.stats()) == (2, 1_000)


async def test_pending_takes_at_most_limit_and_skips_excluded_conversations(
    uow: UnitOfWork,
) -> None:
    rows = [(f"c{i % 3}", str(i)) for i in range(9)]
    await uow.run(lambda tx: tx.webhooks.add(rows, 5))

    first: list[WebhookRow] = await uow.run(lambda tx: tx.webhooks.pending(4))
    assert [r.body for r in first] == ["0", "1", "2", "3"]
    others = await uow.run(lambda tx: tx.webhooks.pending(10, ["c0", "c2"]))
    assert [r.body for r in others] == ["1", "4", "7"]


async def test_rows_of_a_failed_transaction_are_not_kept(uow: UnitOfWork) -> None:
    def fail(tx: Transaction) -> None:
        tx.webhooks.add([("users:1:2", "{}")], 1)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await uow.run(fail)
    assert await uow.run(lambda tx: tx.webhooks.pending(10)) == []
    assert await uow.run(lambda tx: tx.webhooks.stats()) == (0, None)


async def test_one_node_holds_the_lease_until_it_lapses(uow: UnitOfWork) -> None:
    async def take(owner: str, now: int) -> bool:
        return await uow.run(lambda tx: tx.webhooks.take_lease(owner, now, now + 100))

    assert await take("a", 1_000)
    assert not await take("b", 1_050)
    assert await take("a", 1_050)  # renewed: until 1,150
    assert not await take("b", 1_149)
    assert await take("b", 1_150)  # a stopped renewing
    assert not await take("a", 1_200)


async def test_a_buried_row_leaves_the_outbox_for_the_dead_letters_and_can_come_back(
    uow: UnitOfWork,
) -> None:
    rows = [("c1", "a"), ("c1", "b"), ("c2", "c"), ("c1", "d")]
    await uow.run(lambda tx: tx.webhooks.add(rows, 1_000))
    first, second, third, fourth = await uow.run(lambda tx: tx.webhooks.pending(10))

    def bury(tx: Transaction) -> None:
        tx.webhooks.bury(first, 5_000, "refused 5 times (last: HTTP 400)")
        tx.webhooks.bury(third, 6_000, "refused")

    await uow.run(bury)
    assert await uow.run(lambda tx: tx.webhooks.pending(10)) == [second, fourth]
    assert await uow.run(lambda tx: tx.webhooks.stats()) == (2, 1_000)
    assert await uow.run(lambda tx: tx.webhooks.dead_count()) == 2
    dead = await uow.run(lambda tx: tx.webhooks.dead(10))
    assert [(d.id, d.conversation, d.body, d.created_ms, d.died_ms) for d in dead] == [
        (first.id, "c1", "a", 1_000, 5_000),
        (third.id, "c2", "c", 1_000, 6_000),
    ]
    assert dead[0].reason == "refused 5 times (last: HTTP 400)"
    assert [d.id for d in await uow.run(lambda tx: tx.webhooks.dead(10, first.id))] == [third.id]
    assert [d.id for d in await uow.run(lambda tx: tx.webhooks.dead(1))] == [first.id]

    # Retried: back at the end of the outbox, under a new id, with its body and age.
    assert await uow.run(lambda tx: tx.webhooks.revive([first.id, 999_999])) == 1
    pending = await uow.run(lambda tx: tx.webhooks.pending(10))
    assert [r.body for r in pending] == ["b", "d", "a"]
    assert pending[-1].id > fourth.id and pending[-1].created_ms == 1_000
    assert await uow.run(lambda tx: tx.webhooks.dead_count()) == 1

    assert await uow.run(lambda tx: tx.webhooks.drop_dead(None)) == 1
    assert await uow.run(lambda tx: tx.webhooks.dead(10)) == []
    assert await uow.run(lambda tx: tx.webhooks.revive(None)) == 0


async def test_reviving_every_dead_letter_keeps_their_order(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: tx.webhooks.add([("c", str(n)) for n in range(5)], 1))
    rows = await uow.run(lambda tx: tx.webhooks.pending(10))

    def bury_all(tx: Transaction) -> None:
        for row in rows:
            tx.webhooks.bury(row, 2, "refused")

    await uow.run(bury_all)
    assert await uow.run(lambda tx: tx.webhooks.drop_dead([rows[1].id])) == 1
    assert await uow.run(lambda tx: tx.webhooks.revive(None)) == 4
    assert [r.body for r in await uow.run(lambda tx: tx.webhooks.pending(10))] == [
        "0", "2", "3", "4"
    ]
