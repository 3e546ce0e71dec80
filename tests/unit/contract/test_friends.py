"""The FriendRepository contract: friendships are mutual, requests are one-way and ordered."""

import pytest

from chatserver.domain.errors import UnknownUser
from chatserver.domain.ports import Transaction, UnitOfWork
from chatserver.domain.users import User

from .sample import add_users

pytestmark = pytest.mark.anyio


async def test_friendship_is_mutual(uow: UnitOfWork) -> None:
    def befriend(tx: Transaction) -> tuple[bool, bool, list[User], list[User]]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.befriend(alice.id, bob.id)
        return (
            tx.friends.are_friends(alice.id, bob.id),
            tx.friends.are_friends(bob.id, alice.id),
            tx.friends.friends_of(alice.id),
            tx.friends.friends_of(bob.id),
        )

    assert await uow.run(befriend) == (True, True, [User(2, "bob")], [User(1, "alice")])


async def test_friends_are_listed_by_id(uow: UnitOfWork) -> None:
    def befriend(tx: Transaction) -> list[User]:
        alice, *others = add_users(tx, "alice", "bob", "carol", "dave")
        for other in reversed(others):
            tx.friends.befriend(other.id, alice.id)
        return tx.friends.friends_of(alice.id)

    assert await uow.run(befriend) == [User(2, "bob"), User(3, "carol"), User(4, "dave")]


async def test_befriending_twice_makes_one_friendship(uow: UnitOfWork) -> None:
    def befriend_twice(tx: Transaction) -> list[User]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.befriend(alice.id, bob.id)
        tx.friends.befriend(bob.id, alice.id)
        tx.friends.befriend(alice.id, bob.id)
        return tx.friends.friends_of(alice.id) + tx.friends.friends_of(bob.id)

    assert await uow.run(befriend_twice) == [User(2, "bob"), User(1, "alice")]


async def test_unfriending_ends_the_friendship_on_both_sides(uow: UnitOfWork) -> None:
    def unfriend(tx: Transaction) -> tuple[bool, bool, list[User], list[User]]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.befriend(alice.id, bob.id)
        tx.friends.befriend(alice.id, carol.id)
        tx.friends.unfriend(bob.id, alice.id)
        tx.friends.unfriend(bob.id, carol.id)  # never friends: nothing happens
        return (
            tx.friends.are_friends(alice.id, bob.id),
            tx.friends.are_friends(bob.id, alice.id),
            tx.friends.friends_of(alice.id),
            tx.friends.friends_of(bob.id),
        )

    assert await uow.run(unfriend) == (False, False, [User(3, "carol")], [])


async def test_a_request_goes_one_way(uow: UnitOfWork) -> None:
    def request(tx: Transaction) -> tuple[bool, bool, bool, list[User], list[User]]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.add_request(alice.id, bob.id)
        return (
            tx.friends.has_request(alice.id, bob.id),
            tx.friends.has_request(bob.id, alice.id),
            tx.friends.are_friends(alice.id, bob.id),
            tx.friends.requesters_of(bob.id),
            tx.friends.requesters_of(alice.id),
        )

    assert await uow.run(request) == (True, False, False, [User(1, "alice")], [])


async def test_requesters_are_listed_oldest_request_first(uow: UnitOfWork) -> None:
    def request(tx: Transaction) -> list[User]:
        alice, bob, carol, dave = add_users(tx, "alice", "bob", "carol", "dave")
        for requester in (carol, bob, dave):
            tx.friends.add_request(requester.id, alice.id)
        tx.friends.add_request(carol.id, alice.id)  # again: keeps its place
        return tx.friends.requesters_of(alice.id)

    assert await uow.run(request) == [User(3, "carol"), User(2, "bob"), User(4, "dave")]


async def test_a_request_made_again_after_removal_goes_to_the_back(uow: UnitOfWork) -> None:
    def request(tx: Transaction) -> list[User]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.add_request(bob.id, alice.id)
        tx.friends.add_request(carol.id, alice.id)
        tx.friends.remove_request(bob.id, alice.id)
        tx.friends.add_request(bob.id, alice.id)
        return tx.friends.requesters_of(alice.id)

    assert await uow.run(request) == [User(3, "carol"), User(2, "bob")]


async def test_removing_a_request_says_whether_there_was_one(uow: UnitOfWork) -> None:
    def remove(tx: Transaction) -> tuple[bool, bool, bool, bool]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.friends.add_request(alice.id, bob.id)
        return (
            tx.friends.remove_request(bob.id, alice.id),
            tx.friends.remove_request(alice.id, bob.id),
            tx.friends.remove_request(alice.id, bob.id),
            tx.friends.has_request(alice.id, bob.id),
        )

    assert await uow.run(remove) == (False, True, False, False)


async def test_requests_and_friendships_survive_the_transaction(uow: UnitOfWork) -> None:
    def setup(tx: Transaction) -> None:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        tx.friends.befriend(alice.id, bob.id)
        tx.friends.add_request(carol.id, alice.id)

    await uow.run(setup)

    def look(tx: Transaction) -> tuple[list[User], list[User]]:
        return tx.friends.friends_of(2), tx.friends.requesters_of(1)

    assert await uow.run(look) == ([User(1, "alice")], [User(3, "carol")])


@pytest.mark.parametrize("change", ["befriend", "add_request"])
async def test_unknown_users_cannot_be_friends_or_ask(uow: UnitOfWork, change: str) -> None:
    await uow.run(lambda tx: add_users(tx, "alice"))
    for a, b in [(1, 99), (99, 1)]:
        with pytest.raises(UnknownUser):
            await uow.run(lambda tx: getattr(tx.friends, change)(a, b))  # noqa: B023

    def look(tx: Transaction) -> tuple[list[User], list[User]]:
        return tx.friends.friends_of(1), tx.friends.requesters_of(1)

    assert await uow.run(look) == ([], [])


async def test_strangers_have_no_friends_and_no_requests(uow: UnitOfWork) -> None:
    def look(tx: Transaction) -> tuple[list[User], list[User], bool, bool]:
        return (
            tx.friends.friends_of(7),
            tx.friends.requesters_of(7),
            tx.friends.are_friends(7, 8),
            tx.friends.has_request(7, 8),
        )

    assert await uow.run(look) == ([], [], False, False)
