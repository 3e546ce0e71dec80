"""The MessageStore contract: deliveries wait oldest first, stored once per msg_id."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatserver.domain.errors import UnknownUser
from chatserver.domain.messages import Delivery, DirectMessage, FriendAnswer, GroupMessage
from chatserver.domain.ports import Transaction, UnitOfWork

from .adapters import NewUnitOfWork
from .sample import TRICKY_TEXT, add_users, per_example

pytestmark = pytest.mark.anyio


def direct(msg_id: int, text: str = "hello", recipient_id: int = 1) -> DirectMessage:
    return DirectMessage(msg_id, 2, "bob", recipient_id, text, 1_700_000_000_000 + msg_id)


def store_all(tx: Transaction, user_id: int, deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        tx.messages.store(user_id, delivery)


async def test_deliveries_wait_oldest_stored_first(uow: UnitOfWork) -> None:
    deliveries: list[Delivery] = [direct(5), direct(2), direct(9), direct(1)]

    def store(tx: Transaction) -> None:
        add_users(tx, "alice", "bob")
        store_all(tx, 1, deliveries)

    await uow.run(store)
    assert await uow.run(lambda tx: tx.messages.waiting(1)) == deliveries


async def test_every_kind_of_delivery_comes_back_equal(uow: UnitOfWork) -> None:
    deliveries: list[Delivery] = [
        direct(1),
        GroupMessage(2, 7, 2, "bob", "hi all", 1_700_000_000_002),
        FriendAnswer(3, 2, "bob", accepted=True),
        FriendAnswer(4, 3, "carol", accepted=False),
    ]

    def store(tx: Transaction) -> None:
        add_users(tx, "alice", "bob")
        store_all(tx, 1, deliveries)

    await uow.run(store)
    assert await uow.run(lambda tx: tx.messages.waiting(1)) == deliveries


async def test_storing_a_msg_id_again_keeps_the_first(uow: UnitOfWork) -> None:
    def store(tx: Transaction) -> None:
        add_users(tx, "alice", "bob")
        store_all(tx, 1, [direct(1, "first"), direct(2), direct(1, "second")])

    await uow.run(store)
    await uow.run(lambda tx: tx.messages.store(1, direct(1, "third")))

    def look(tx: Transaction) -> tuple[list[Delivery], int]:
        return tx.messages.waiting(1), tx.messages.count(1)

    assert await uow.run(look) == ([direct(1, "first"), direct(2)], 2)


async def test_users_keep_their_own_copy_of_one_msg_id(uow: UnitOfWork) -> None:
    def store(tx: Transaction) -> tuple[list[Delivery], list[Delivery]]:
        add_users(tx, "alice", "bob", "carol")
        group_message = GroupMessage(1, 1, 2, "bob", "hi", 0)
        tx.messages.store(1, group_message)
        tx.messages.store(3, group_message)
        tx.messages.delete(1, [1])
        return tx.messages.waiting(1), tx.messages.waiting(3)

    assert await uow.run(store) == ([], [GroupMessage(1, 1, 2, "bob", "hi", 0)])


async def test_delete_removes_only_the_named_deliveries_of_that_user(uow: UnitOfWork) -> None:
    def store(tx: Transaction) -> None:
        add_users(tx, "alice", "bob")
        store_all(tx, 1, [direct(i) for i in range(1, 6)])
        store_all(tx, 2, [direct(i, recipient_id=2) for i in range(1, 6)])

    await uow.run(store)
    await uow.run(lambda tx: tx.messages.delete(1, iter([4, 2, 99])))

    def look(tx: Transaction) -> tuple[list[int], int, int]:
        return (
            [d.msg_id for d in tx.messages.waiting(1)],
            tx.messages.count(1),
            tx.messages.count(2),
        )

    assert await uow.run(look) == ([1, 3, 5], 3, 5)


async def test_nobody_has_anything_waiting_at_first(uow: UnitOfWork) -> None:
    def look(tx: Transaction) -> tuple[list[Delivery], int]:
        tx.messages.delete(1, [1, 2])
        return tx.messages.waiting(1), tx.messages.count(1)

    assert await uow.run(look) == ([], 0)


async def test_a_delivery_for_an_unknown_user_raises_unknown_user(uow: UnitOfWork) -> None:
    with pytest.raises(UnknownUser):
        await uow.run(lambda tx: tx.messages.store(1, direct(1)))
    assert await uow.run(lambda tx: tx.messages.count(1)) == 0


texts = st.text(min_size=1)


@per_example
@given(
    name=st.text(),
    text=texts,
    sent_at_ms=st.integers(min_value=0, max_value=2**53),
    group_id=st.integers(min_value=1, max_value=2**31 - 1),
)
@example(name=TRICKY_TEXT, text=TRICKY_TEXT, sent_at_ms=0, group_id=1)
async def test_message_text_round_trips_unchanged(
    new_uow: NewUnitOfWork, name: str, text: str, sent_at_ms: int, group_id: int
) -> None:
    uow = await new_uow()
    deliveries: list[Delivery] = [
        DirectMessage(1, 2, name, 1, text, sent_at_ms),
        GroupMessage(2, group_id, 2, name, text, sent_at_ms),
        FriendAnswer(3, 2, name, accepted=True),
    ]

    def store(tx: Transaction) -> None:
        add_users(tx, "alice")
        store_all(tx, 1, deliveries)

    await uow.run(store)
    assert await uow.run(lambda tx: tx.messages.waiting(1)) == deliveries
