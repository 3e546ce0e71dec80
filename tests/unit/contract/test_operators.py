"""The repository contract for an operator's actions: suspension, listing, deleting an account,
restoring an exported one (memory, SQLite and MySQL)."""

import pytest

from chatserver.domain.errors import NameTaken
from chatserver.domain.groups import Group, Role
from chatserver.domain.messages import DirectMessage, FriendAnswer, GroupMessage, Kept
from chatserver.domain.ports import Transaction, UnitOfWork
from chatserver.domain.users import DELETED_USER_NAME, Account, User

pytestmark = pytest.mark.anyio


async def test_a_suspension_is_kept_and_lifted(uow: UnitOfWork) -> None:
    alice = await uow.run(lambda tx: tx.users.add("alice", "hash"))
    assert await uow.run(lambda tx: tx.users.set_suspended(alice.id, 1_900_000_000_000))
    account = await uow.run(lambda tx: tx.users.account_by_name("alice"))
    assert account == Account(alice, "hash", 1_900_000_000_000)
    assert await uow.run(lambda tx: tx.users.set_suspended(alice.id, None))
    assert await uow.run(lambda tx: tx.users.account(alice.id)) == Account(alice, "hash")
    assert not await uow.run(lambda tx: tx.users.set_suspended(99, 1))


async def test_accounts_are_listed_by_id_a_page_at_a_time(uow: UnitOfWork) -> None:
    users = await uow.run(lambda tx: [tx.users.add(n, "h") for n in ("a", "b", "c")])
    page = await uow.run(lambda tx: tx.users.accounts(0, 2))
    assert [a.user for a in page] == users[:2]
    rest = await uow.run(lambda tx: tx.users.accounts(users[1].id, 2))
    assert [a.user for a in rest] == users[2:]


async def test_deleting_an_account_erases_what_is_its_own_and_renames_what_it_sent(
    uow: UnitOfWork,
) -> None:
    def setup(tx: Transaction) -> tuple[User, User, User, Group]:
        alice, bob, carol = (tx.users.add(n, "h") for n in ("alice", "bob", "carol"))
        tx.friends.befriend(alice.id, bob.id)
        tx.friends.add_request(carol.id, alice.id)
        tx.friends.block(carol.id, alice.id)
        tx.friends.block(alice.id, bob.id)
        group = tx.groups.create("team", "", bob.id)
        tx.groups.add_member(group.id, alice.id, Role.NORMAL)
        tx.inbox.append(
            [
                (bob.id, DirectMessage(1, alice.id, "alice", bob.id, "hi", 5)),
                (alice.id, DirectMessage(1, alice.id, "alice", bob.id, "hi", 5)),
                (bob.id, GroupMessage(2, group.id, alice.id, "alice", "team!", 6)),
                (bob.id, FriendAnswer(3, alice.id, "alice", True)),
                (alice.id, DirectMessage(4, bob.id, "bob", alice.id, "yo", 7)),
            ],
            10,
        )
        return alice, bob, carol, group

    alice, bob, carol, group = await uow.run(setup)
    assert await uow.run(lambda tx: tx.users.delete(alice.id))
    assert not await uow.run(lambda tx: tx.users.delete(alice.id))

    def read(tx: Transaction) -> dict[str, object]:
        return {
            "get": tx.users.get(alice.id),
            "by name": tx.users.account_by_name("alice"),
            "listed": [a.user.id for a in tx.users.accounts(0, 10)],
            "bob's friends": tx.friends.friends_of(bob.id),
            "requests": tx.friends.requesters_of(alice.id),
            "carol blocks": tx.friends.blocked_by(carol.id),
            "bob's blockers": tx.friends.blockers_of(bob.id),
            "members": [m.user.id for m in tx.groups.members(group.id)],
            "inbox": tx.inbox.after(alice.id, 0, 10),
            "bob's inbox": [k.delivery for k in tx.inbox.after(bob.id, 0, 10)],
        }

    assert await uow.run(read) == {
        "get": None,
        "by name": None,
        "listed": [bob.id, carol.id],
        "bob's friends": [],
        "requests": [],
        "carol blocks": [],
        "bob's blockers": [],
        "members": [bob.id],
        "inbox": [],
        "bob's inbox": [
            DirectMessage(1, alice.id, DELETED_USER_NAME, bob.id, "hi", 5),
            GroupMessage(2, group.id, alice.id, DELETED_USER_NAME, "team!", 6),
            FriendAnswer(3, alice.id, DELETED_USER_NAME, True),
        ],
    }
    # The name is free again, the id is never used again; a write in flight to the deleted
    # id still commits (it is kept nowhere anyone reads).
    again = await uow.run(lambda tx: tx.users.add("alice", "h2"))
    assert again.id > carol.id
    await uow.run(
        lambda tx: tx.inbox.append(
            [(alice.id, DirectMessage(9, bob.id, "bob", alice.id, "?", 1))], 1
        )
    )


async def test_an_exported_account_is_restored_with_its_ids_and_positions(
    uow: UnitOfWork,
) -> None:
    alice = Account(User(7, "alice"), "hash", 1_900_000_000_000)
    group = Group(5, "team", "the team")
    kept = (
        Kept(3, DirectMessage(40, 7, "alice", 7, "note", 1)),
        Kept(4, GroupMessage(41, 5, 7, "alice", "hi", 2)),
    )

    def restore(tx: Transaction) -> None:
        tx.users.restore(alice)
        tx.groups.restore(group)
        tx.groups.add_member(group.id, 7, Role.CREATOR)
        tx.inbox.restore(7, kept, 4, 3, 100)
        tx.message_ids.advance_past(41)

    await uow.run(restore)

    def read(tx: Transaction) -> tuple[object, ...]:
        return (
            tx.users.account(7),
            tx.groups.get(5),
            tx.inbox.after(7, 0, 10),
            tx.inbox.last_pos(7),
            tx.inbox.read_pos(7),
            tx.inbox.conversation(7, group_id=5, limit=10),
            tx.message_ids.reserve(1) > 41,
            tx.users.add("bob", "h").id > 7,
            tx.groups.create("other", "", 7).id > 5,
        )

    assert await uow.run(read) == (
        alice,
        group,
        list(kept),
        4,
        3,
        [kept[1]],
        True,
        True,
        True,
    )
    # A new entry follows the restored ones.
    positions = await uow.run(
        lambda tx: tx.inbox.append([(7, DirectMessage(50, 7, "alice", 7, "next", 3))], 200)
    )
    assert positions == [5]
    for taken in (Account(User(7, "other"), "h"), Account(User(99, "alice"), "h")):
        with pytest.raises(NameTaken):
            await uow.run(lambda tx, taken=taken: tx.users.restore(taken))
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.restore(Group(5, "new name", "")))


async def test_groups_are_listed_by_id_a_page_at_a_time(uow: UnitOfWork) -> None:
    def setup(tx: Transaction) -> list[Group]:
        owner = tx.users.add("owner", "h")
        return [tx.groups.create(n, "", owner.id) for n in ("g1", "g2", "g3")]

    groups = await uow.run(setup)
    assert await uow.run(lambda tx: tx.groups.all(0, 2)) == groups[:2]
    assert await uow.run(lambda tx: tx.groups.all(groups[1].id, 5)) == groups[2:]
