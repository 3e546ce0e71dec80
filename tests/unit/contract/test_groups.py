"""The GroupRepository contract: unique names, a creator, members in the order they joined."""

from contextlib import suppress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatserver.domain.errors import NameTaken, UnknownGroup, UnknownUser
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.ports import Transaction, UnitOfWork
from chatserver.domain.users import User

from .adapters import NewUnitOfWork
from .sample import TRICKY_TEXT, add_users, per_example

pytestmark = pytest.mark.anyio


async def test_a_new_group_has_its_creator_as_member(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> tuple[Group, Group | None, list[Member], list[Group]]:
        _, bob = add_users(tx, "alice", "bob")
        group = tx.groups.create("friends", "people I know", bob.id)
        return group, tx.groups.get(group.id), tx.groups.members(group.id), tx.groups.groups_of(2)

    group = Group(1, "friends", "people I know")
    creator = Member(User(2, "bob"), Role.CREATOR)
    assert await uow.run(create) == (group, group, [creator], [group])


async def test_groups_get_ids_counting_from_one(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> list[int]:
        (alice,) = add_users(tx, "alice")
        return [tx.groups.create(name, "", alice.id).id for name in ("a", "b", "c")]

    assert await uow.run(create) == [1, 2, 3]


async def test_a_taken_group_name_raises_name_taken(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> None:
        add_users(tx, "alice", "bob")
        tx.groups.create("friends", "first", 1)

    await uow.run(create)
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.create("friends", "second", 2))

    def look(tx: Transaction) -> tuple[Group | None, Group | None, list[Group]]:
        return tx.groups.get(1), tx.groups.get(2), tx.groups.groups_of(2)

    assert await uow.run(look) == (Group(1, "friends", "first"), None, [])


async def test_users_and_groups_may_share_a_name(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> Group:
        (alice,) = add_users(tx, "alice")
        return tx.groups.create("alice", "", alice.id)

    assert await uow.run(create) == Group(1, "alice", "")


async def test_members_are_listed_in_the_order_they_joined(uow: UnitOfWork) -> None:
    def join(tx: Transaction) -> list[Member]:
        alice, bob, carol, dave = add_users(tx, "alice", "bob", "carol", "dave")
        group = tx.groups.create("friends", "", carol.id)
        tx.groups.add_member(group.id, dave.id, Role.NORMAL)
        tx.groups.add_member(group.id, alice.id, Role.NORMAL)
        tx.groups.add_member(group.id, bob.id, Role.CREATOR)
        return tx.groups.members(group.id)

    assert await uow.run(join) == [
        Member(User(3, "carol"), Role.CREATOR),
        Member(User(4, "dave"), Role.NORMAL),
        Member(User(1, "alice"), Role.NORMAL),
        Member(User(2, "bob"), Role.CREATOR),
    ]


async def test_adding_a_member_twice_keeps_the_first(uow: UnitOfWork) -> None:
    def join(tx: Transaction) -> tuple[bool, bool, bool, list[Member]]:
        alice, bob = add_users(tx, "alice", "bob")
        group = tx.groups.create("friends", "", alice.id)
        return (
            tx.groups.add_member(group.id, bob.id, Role.NORMAL),
            tx.groups.add_member(group.id, bob.id, Role.CREATOR),
            tx.groups.add_member(group.id, alice.id, Role.NORMAL),
            tx.groups.members(group.id),
        )

    members = [Member(User(1, "alice"), Role.CREATOR), Member(User(2, "bob"), Role.NORMAL)]
    assert await uow.run(join) == (True, False, False, members)


async def test_removing_a_member_says_whether_they_were_one(uow: UnitOfWork) -> None:
    def leave(tx: Transaction) -> tuple[bool, bool, list[Member], list[Group]]:
        alice, bob = add_users(tx, "alice", "bob")
        group = tx.groups.create("friends", "", alice.id)
        tx.groups.add_member(group.id, bob.id, Role.NORMAL)
        return (
            tx.groups.remove_member(group.id, bob.id),
            tx.groups.remove_member(group.id, bob.id),
            tx.groups.members(group.id),
            tx.groups.groups_of(bob.id),
        )

    assert await uow.run(leave) == (True, False, [Member(User(1, "alice"), Role.CREATOR)], [])


async def test_rejoining_puts_a_member_at_the_end(uow: UnitOfWork) -> None:
    def rejoin(tx: Transaction) -> list[str]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        group = tx.groups.create("friends", "", alice.id)
        tx.groups.add_member(group.id, bob.id, Role.NORMAL)
        tx.groups.add_member(group.id, carol.id, Role.NORMAL)
        tx.groups.remove_member(group.id, bob.id)
        tx.groups.add_member(group.id, bob.id, Role.NORMAL)
        return [member.user.name for member in tx.groups.members(group.id)]

    assert await uow.run(rejoin) == ["alice", "carol", "bob"]


async def test_a_users_groups_are_listed_by_group_id(uow: UnitOfWork) -> None:
    def join(tx: Transaction) -> list[int]:
        alice, bob = add_users(tx, "alice", "bob")
        ids = [tx.groups.create(name, "", alice.id).id for name in ("a", "b", "c", "d")]
        for group_id in reversed(ids[1:]):
            tx.groups.add_member(group_id, bob.id, Role.NORMAL)
        return [group.id for group in tx.groups.groups_of(bob.id)]

    assert await uow.run(join) == [2, 3, 4]


async def test_unknown_groups_are_none_and_empty(uow: UnitOfWork) -> None:
    def look(tx: Transaction) -> tuple[Group | None, list[Member], list[Group], bool]:
        add_users(tx, "alice")
        return (
            tx.groups.get(1),
            tx.groups.members(1),
            tx.groups.groups_of(1),
            tx.groups.remove_member(1, 1),
        )

    assert await uow.run(look) == (None, [], [], False)


async def test_joining_an_unknown_group_raises_unknown_group(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: add_users(tx, "alice"))
    with pytest.raises(UnknownGroup):
        await uow.run(lambda tx: tx.groups.add_member(1, 1, Role.NORMAL))


async def test_an_unknown_user_cannot_join(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> None:
        add_users(tx, "alice")
        tx.groups.create("friends", "", 1)

    await uow.run(create)
    with pytest.raises(UnknownUser):
        await uow.run(lambda tx: tx.groups.add_member(1, 99, Role.NORMAL))
    assert await uow.run(lambda tx: len(tx.groups.members(1))) == 1


async def test_an_unknown_creator_leaves_no_group_behind(uow: UnitOfWork) -> None:
    def create(tx: Transaction) -> tuple[Group | None, Group]:
        with suppress(UnknownUser):
            tx.groups.create("friends", "", 99)
        (alice,) = add_users(tx, "alice")
        return tx.groups.get(1), tx.groups.create("friends", "", alice.id)

    assert await uow.run(create) == (None, Group(1, "friends", ""))


@per_example
@given(name=st.text(), description=st.text())
@example(name=TRICKY_TEXT, description=TRICKY_TEXT)
async def test_group_names_and_descriptions_round_trip_unchanged(
    new_uow: NewUnitOfWork, name: str, description: str
) -> None:
    uow = await new_uow()

    def create(tx: Transaction) -> Group:
        (alice,) = add_users(tx, "alice")
        return tx.groups.create(name, description, alice.id)

    group = await uow.run(create)
    assert await uow.run(lambda tx: tx.groups.groups_of(1)) == [Group(group.id, name, description)]


# --- Version 2: roles, mutes, renaming, dissolving ----------------------------------------


async def test_roles_and_mutes_are_kept_per_member_in_joining_order(uow: UnitOfWork) -> None:
    def change(tx: Transaction) -> tuple[list[Member], bool, bool]:
        alice, bob, carol = add_users(tx, "alice", "bob", "carol")
        group = tx.groups.create("g", "", alice.id)
        tx.groups.add_member(group.id, bob.id, Role.NORMAL)
        tx.groups.add_member(group.id, carol.id, Role.NORMAL)
        tx.groups.set_role(group.id, carol.id, Role.ADMIN)
        tx.groups.set_role(group.id, carol.id, Role.ADMIN)  # again: still a member
        tx.groups.set_muted(group.id, bob.id, 1_700_000_000_123)
        return (
            tx.groups.members(group.id),
            tx.groups.set_role(group.id, 999, Role.ADMIN),
            tx.groups.set_muted(group.id, 999, 5),
        )

    members, role_of_stranger, mute_of_stranger = await uow.run(change)
    assert members == [
        Member(User(1, "alice"), Role.CREATOR),
        Member(User(2, "bob"), Role.NORMAL, 1_700_000_000_123),
        Member(User(3, "carol"), Role.ADMIN),
    ]
    assert not role_of_stranger and not mute_of_stranger
    assert await uow.run(lambda tx: tx.groups.set_muted(1, 2, 0))
    assert (await uow.run(lambda tx: tx.groups.members(1)))[1].muted_until == 0


async def test_a_mute_goes_with_the_membership(uow: UnitOfWork) -> None:
    def mute_and_leave(tx: Transaction) -> list[Member]:
        alice, bob = add_users(tx, "alice", "bob")
        tx.groups.create("g", "", alice.id)
        tx.groups.add_member(1, bob.id, Role.NORMAL)
        tx.groups.set_muted(1, bob.id, 99)
        tx.groups.remove_member(1, bob.id)
        tx.groups.add_member(1, bob.id, Role.NORMAL)
        return tx.groups.members(1)

    assert [m.muted_until for m in await uow.run(mute_and_leave)] == [0, 0]


async def test_update_renames_and_describes_and_keeps_names_unique(uow: UnitOfWork) -> None:
    def setup(tx: Transaction) -> None:
        (alice,) = add_users(tx, "alice")
        tx.groups.create("one", "first", alice.id)
        tx.groups.create("two", "second", alice.id)

    await uow.run(setup)
    assert await uow.run(lambda tx: tx.groups.update(1, "uno", None)) == Group(1, "uno", "first")
    assert await uow.run(lambda tx: tx.groups.update(1, None, TRICKY_TEXT)) == Group(
        1, "uno", TRICKY_TEXT
    )
    assert await uow.run(lambda tx: tx.groups.update(1, "uno", "")) == Group(1, "uno", "")
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.update(1, "two", None))
    with pytest.raises(UnknownGroup):
        await uow.run(lambda tx: tx.groups.update(99, "x", None))
    # the old name is free again
    assert (await uow.run(lambda tx: tx.groups.create("one", "", 1))).name == "one"


async def test_a_deleted_group_is_gone_its_name_free_and_its_id_never_reused(
    uow: UnitOfWork,
) -> None:
    def setup(tx: Transaction) -> None:
        alice, bob = add_users(tx, "alice", "bob")
        tx.groups.create("g", "", alice.id)
        tx.groups.add_member(1, bob.id, Role.NORMAL)
        tx.groups.set_muted(1, bob.id, 42)

    await uow.run(setup)
    assert await uow.run(lambda tx: tx.groups.delete(1))
    assert not await uow.run(lambda tx: tx.groups.delete(1))

    def look(tx: Transaction) -> tuple[Group | None, list[Member], list[Group], Group]:
        return tx.groups.get(1), tx.groups.members(1), tx.groups.groups_of(2), tx.groups.create(
            "g", "again", 2
        )

    gone, members, of_bob, again = await uow.run(look)
    assert (gone, members, of_bob) == (None, [], [])
    assert again.id == 2 and again.name == "g"
    with pytest.raises(UnknownGroup):
        await uow.run(lambda tx: tx.groups.add_member(1, 1, Role.NORMAL))


async def test_a_rolled_back_delete_leaves_the_group_as_it_was(uow: UnitOfWork) -> None:
    def setup(tx: Transaction) -> None:
        alice, bob = add_users(tx, "alice", "bob")
        tx.groups.create("g", "d", alice.id)
        tx.groups.add_member(1, bob.id, Role.ADMIN)

    await uow.run(setup)

    def delete_then_fail(tx: Transaction) -> None:
        tx.groups.delete(1)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await uow.run(delete_then_fail)

    def look(tx: Transaction) -> tuple[Group | None, list[Member]]:
        return tx.groups.get(1), tx.groups.members(1)

    assert await uow.run(look) == (
        Group(1, "g", "d"),
        [Member(User(1, "alice"), Role.CREATOR), Member(User(2, "bob"), Role.ADMIN)],
    )


async def test_group_names_are_unique_by_look_also_when_renamed(uow: UnitOfWork) -> None:
    """Issue 16.10: a group named in Cyrillic look-alikes of a Latin group's name."""
    def make(tx: Transaction) -> tuple[int, int]:
        owner = tx.users.add("owner", "hash")
        return tx.groups.create("chess", "", owner.id).id, tx.groups.create("go", "", owner.id).id

    _chess, go = await uow.run(make)
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.create("\u0441h\u0435ss", "", 1))  # с, е Cyrillic
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.update(go, "\u0441hess", None))


async def test_group_names_are_unique_ignoring_case_also_when_renamed(uow: UnitOfWork) -> None:
    def make(tx: Transaction) -> tuple[int, int]:
        owner = tx.users.add("owner", "hash")
        return tx.groups.create("Chess", "", owner.id).id, tx.groups.create("Go", "", owner.id).id

    chess, go = await uow.run(make)
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.create("CHESS", "", 1))
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.groups.update(go, "chess", None))
    await uow.run(lambda tx: tx.groups.update(chess, "CHESS", None))  # its own key: fine
    await uow.run(lambda tx: tx.groups.delete(chess))
    again = await uow.run(lambda tx: tx.groups.create("chess", "", 1))
    names = await uow.run(lambda tx: tx.groups.names())
    assert [(n.id, n.name, n.keyed) for n in names] == [(go, "Go", True), (again.id, "chess", True)]
