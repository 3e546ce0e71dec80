"""The FriendRepository's declines (issue 13.4): when an addressee last declined a requester,
one-way, replaced by a newer one, forgotten when old, when the two become friends, and with
a deleted account."""

import pytest

from chatserver.domain.errors import UnknownUser
from chatserver.domain.ports import Transaction, UnitOfWork

from .sample import add_users

pytestmark = pytest.mark.anyio

DAY_MS = 86_400_000


async def test_a_decline_is_one_way_and_a_newer_one_replaces_it(uow: UnitOfWork) -> None:
    def decline(tx: Transaction) -> tuple[int | None, int | None, int | None]:
        alice, bob = add_users(tx, "alice", "bob")
        before = tx.friends.declined_at(alice.id, bob.id)
        tx.friends.note_decline(alice.id, bob.id, 1_000, forget_before_ms=0)
        tx.friends.note_decline(alice.id, bob.id, 5_000, forget_before_ms=0)
        return (
            before,
            tx.friends.declined_at(alice.id, bob.id),
            tx.friends.declined_at(bob.id, alice.id),
        )

    assert await uow.run(decline) == (None, 5_000, None)


async def test_a_decline_survives_the_transaction(uow: UnitOfWork) -> None:
    def decline(tx: Transaction) -> None:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.note_decline(alice.id, bob.id, 7 * DAY_MS, forget_before_ms=6 * DAY_MS)

    await uow.run(decline)
    assert await uow.run(lambda tx: tx.friends.declined_at(1, 2)) == 7 * DAY_MS


async def test_writing_a_decline_forgets_the_old_ones_of_anyone(uow: UnitOfWork) -> None:
    def decline(tx: Transaction) -> tuple[int | None, int | None, int | None]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.note_decline(alice.id, bob.id, 1 * DAY_MS, forget_before_ms=0)
        tx.friends.note_decline(carol.id, bob.id, 2 * DAY_MS, forget_before_ms=0)
        tx.friends.note_decline(alice.id, carol.id, 3 * DAY_MS, forget_before_ms=2 * DAY_MS)
        return (
            tx.friends.declined_at(alice.id, bob.id),
            tx.friends.declined_at(carol.id, bob.id),
            tx.friends.declined_at(alice.id, carol.id),
        )

    assert await uow.run(decline) == (None, 2 * DAY_MS, 3 * DAY_MS)


async def test_forgetting_the_declines_of_two_leaves_others(uow: UnitOfWork) -> None:
    def forget(tx: Transaction) -> tuple[int | None, int | None, int | None]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.note_decline(alice.id, bob.id, 10, forget_before_ms=0)
        tx.friends.note_decline(bob.id, alice.id, 20, forget_before_ms=0)
        tx.friends.note_decline(carol.id, bob.id, 30, forget_before_ms=0)
        tx.friends.forget_declines(bob.id, alice.id)
        return (
            tx.friends.declined_at(alice.id, bob.id),
            tx.friends.declined_at(bob.id, alice.id),
            tx.friends.declined_at(carol.id, bob.id),
        )

    assert await uow.run(forget) == (None, None, 30)


async def test_a_deleted_account_takes_its_declines_along(uow: UnitOfWork) -> None:
    def delete(tx: Transaction) -> tuple[int | None, int | None, int | None]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.note_decline(alice.id, bob.id, 10, forget_before_ms=0)
        tx.friends.note_decline(bob.id, carol.id, 20, forget_before_ms=0)
        tx.friends.note_decline(carol.id, alice.id, 30, forget_before_ms=0)
        tx.users.delete(bob.id)
        return (
            tx.friends.declined_at(alice.id, bob.id),
            tx.friends.declined_at(bob.id, carol.id),
            tx.friends.declined_at(carol.id, alice.id),
        )

    assert await uow.run(delete) == (None, None, 30)


async def test_a_decline_rolls_back_with_its_transaction(uow: UnitOfWork) -> None:
    def decline(tx: Transaction) -> None:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.note_decline(alice.id, bob.id, 10, forget_before_ms=0)
        raise UnknownUser()

    with pytest.raises(UnknownUser):
        await uow.run(decline)
    assert await uow.run(lambda tx: tx.friends.declined_at(1, 2)) is None


async def test_the_declines_and_requests_of_a_user_either_side(uow: UnitOfWork) -> None:
    def read(tx: Transaction) -> list[object]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.note_decline(alice.id, bob.id, 10, forget_before_ms=0)
        tx.friends.note_decline(carol.id, alice.id, 20, forget_before_ms=0)
        tx.friends.note_decline(bob.id, carol.id, 30, forget_before_ms=0)
        tx.friends.add_request(alice.id, carol.id)
        tx.friends.add_request(alice.id, bob.id)
        tx.friends.add_request(carol.id, bob.id)
        return [
            tx.friends.declines_of(alice.id),
            tx.friends.declines_of(bob.id),
            tx.friends.requested_by(alice.id),
            tx.friends.requested_by(bob.id),
        ]

    assert await uow.run(read) == [
        [(1, 2, 10), (3, 1, 20)],
        [(1, 2, 10), (2, 3, 30)],
        [2, 3],
        [],
    ]
