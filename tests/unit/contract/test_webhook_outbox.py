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
