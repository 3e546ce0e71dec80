"""The FriendRepository's blocks (BLOCK_MSG, Version 2): one-way, listed both ways, idempotent."""

import pytest

from chatserver.domain.errors import UnknownUser
from chatserver.domain.ports import Transaction, UnitOfWork

from .sample import add_users

pytestmark = pytest.mark.anyio


async def test_a_block_is_one_way_and_listed_from_both_sides(uow: UnitOfWork) -> None:
    def block(tx: Transaction) -> tuple[bool, bool, bool, list[int], list[int], list[int]]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        first = tx.friends.block(alice.id, bob.id)
        tx.friends.block(carol.id, bob.id)
        tx.friends.block(alice.id, carol.id)
        return (
            first,
            tx.friends.is_blocked(alice.id, bob.id),
            tx.friends.is_blocked(bob.id, alice.id),
            tx.friends.blocked_by(alice.id),
            tx.friends.blockers_of(bob.id),
            tx.friends.blocked_by(bob.id),
        )

    assert await uow.run(block) == (True, True, False, [2, 3], [1, 3], [])


async def test_blocking_twice_is_one_block_and_unblocking_ends_it(uow: UnitOfWork) -> None:
    def twice(tx: Transaction) -> tuple[bool, bool, bool, bool, list[int]]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.block(alice.id, bob.id)
        again = tx.friends.block(alice.id, bob.id)
        undone = tx.friends.unblock(alice.id, bob.id)
        undone_again = tx.friends.unblock(alice.id, bob.id)
        return again, undone, undone_again, tx.friends.is_blocked(alice.id, bob.id), (
            tx.friends.blockers_of(bob.id)
        )

    assert await uow.run(twice) == (False, True, False, False, [])


async def test_blocking_an_unknown_user_is_unknown_user(uow: UnitOfWork) -> None:
    def block(tx: Transaction) -> None:
        (alice,) = add_users(tx, "alice")
        tx.friends.block(alice.id, 999)

    with pytest.raises(UnknownUser):
        await uow.run(block)


async def test_a_block_survives_the_transaction(uow: UnitOfWork) -> None:
    def block(tx: Transaction) -> None:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.block(alice.id, bob.id)

    await uow.run(block)
    assert await uow.run(lambda tx: tx.friends.blockers_of(2)) == [1]
