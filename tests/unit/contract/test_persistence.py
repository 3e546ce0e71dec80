"""What the persistent adapters keep when closed and opened again."""

from pathlib import Path

import pytest

from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import DirectMessage, Kept
from chatserver.domain.ports import DeviceMark, Transaction
from chatserver.domain.users import Account, User

from .adapters import Opener
from .sample import add_users

pytestmark = pytest.mark.anyio


def populate(tx: Transaction) -> None:
    alice, bob, carol = add_users(tx, "alice", "bob", "carol")
    tx.friends.befriend(alice.id, bob.id)
    tx.friends.add_request(carol.id, alice.id)
    group = tx.groups.create("friends", "", alice.id)
    tx.groups.add_member(group.id, carol.id, Role.NORMAL)
    tx.inbox.append([(carol.id, DirectMessage(1, 1, "alice", 3, "hi 😀", 0))], 5)
    tx.inbox.set_read_pos(carol.id, 1)
    tx.inbox.set_mark(carol.id, "phone", DeviceMark(1, frozenset({3})))


def look(tx: Transaction) -> tuple[object, ...]:
    return (
        tx.users.account_by_name("carol"),
        tx.friends.friends_of(1),
        tx.friends.requesters_of(1),
        tx.groups.groups_of(3),
        tx.groups.members(1),
        tx.inbox.after(3, 0, 10),
        tx.inbox.read_pos(3),
        tx.inbox.marks(3),
    )


async def test_everything_is_still_there_after_reopening(
    persistent_opener: Opener, tmp_path: Path
) -> None:
    uow = await persistent_opener(tmp_path)
    await uow.run(populate)
    await uow.aclose()

    uow = await persistent_opener(tmp_path)
    found = await uow.run(look)
    added = await uow.run(lambda tx: (tx.users.add("dave", "hash"), tx.groups.create("b", "", 4)))
    await uow.aclose()

    assert found == (
        Account(User(3, "carol"), "hash"),
        [User(2, "bob")],
        [User(3, "carol")],
        [Group(1, "friends", "")],
        [Member(User(1, "alice"), Role.CREATOR), Member(User(3, "carol"), Role.NORMAL)],
        [Kept(1, DirectMessage(1, 1, "alice", 3, "hi 😀", 0))],
        1,
        {"phone": DeviceMark(1, frozenset({3}))},
    )
    assert added == (User(4, "dave"), Group(2, "b", ""))
