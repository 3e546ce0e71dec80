"""The UnitOfWork contract: all or nothing, and safe to share between many tasks."""

from contextlib import suppress
from typing import Any

import anyio
import pytest

from chatserver.domain.errors import NameTaken
from chatserver.domain.groups import Role
from chatserver.domain.messages import DirectMessage, GroupMessage
from chatserver.domain.ports import DeviceMark, Transaction, UnitOfWork
from chatserver.domain.users import User

from .sample import add_users

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def everything(tx: Transaction) -> dict[str, Any]:
    """All that the ports can see of the first few users and groups, and the next message id."""
    ids = range(1, 8)
    return {
        "users": [tx.users.account(i) for i in ids],
        "friends": [tx.friends.friends_of(i) for i in ids],
        "requests": [tx.friends.requesters_of(i) for i in ids],
        "groups": [(tx.groups.get(i), tx.groups.members(i), tx.groups.groups_of(i)) for i in ids],
        "inbox": [
            (
                tx.inbox.after(i, 0, 100),
                tx.inbox.last_pos(i),
                tx.inbox.oldest_pos(i),
                tx.inbox.read_pos(i),
                tx.inbox.marks(i),
                tx.inbox.conversation(i, group_id=1, limit=100),
            )
            for i in ids
        ],
        "next_msg_id": tx.message_ids.reserve(0),
    }


def populate(tx: Transaction) -> None:
    alice, bob, carol = add_users(tx, "alice", "bob", "carol")
    tx.friends.befriend(alice.id, bob.id)
    tx.friends.add_request(carol.id, alice.id)
    tx.friends.add_request(bob.id, carol.id)
    group = tx.groups.create("friends", "people I know", alice.id)
    tx.groups.add_member(group.id, bob.id, Role.NORMAL)
    tx.groups.add_member(group.id, carol.id, Role.NORMAL)
    first = tx.message_ids.reserve(3)
    to_carol = DirectMessage(first, 1, "alice", 3, "hi", 0)
    to_all = GroupMessage(first + 1, 1, 1, "alice", "hi all", 0)
    tx.inbox.append([(carol.id, to_carol), (alice.id, to_carol), (carol.id, to_all)], 0)
    tx.inbox.append([(bob.id, to_all), (alice.id, to_all)], 1)
    tx.inbox.set_read_pos(carol.id, 1)
    tx.inbox.set_mark(carol.id, "phone", DeviceMark(1))


def change_everything_then_fail(tx: Transaction) -> None:
    dave, erin = add_users(tx, "dave", "erin")
    tx.friends.befriend(dave.id, 1)
    tx.friends.unfriend(1, 2)
    tx.friends.remove_request(3, 1)
    tx.friends.add_request(3, 1)  # back in, but at the end
    tx.friends.add_request(erin.id, 1)
    tx.friends.add_request(2, erin.id)
    tx.groups.create("others", "", dave.id)
    tx.groups.remove_member(1, 2)
    tx.groups.add_member(1, 2, Role.NORMAL)  # back in, but at the end
    tx.groups.add_member(1, erin.id, Role.CREATOR)
    tx.inbox.prune_user(3, 1)
    tx.inbox.prune(1, 100)
    tx.inbox.append([(3, DirectMessage(1, 1, "alice", 3, "hi", 0))], 2)  # back in, at the end
    tx.inbox.append([(dave.id, DirectMessage(9, 1, "alice", 4, "hello", 0))], 2)
    tx.inbox.set_read_pos(3, 5)
    tx.inbox.set_mark(3, "phone", DeviceMark(3, frozenset({5})))
    tx.inbox.set_mark(dave.id, "pc", DeviceMark(1))
    tx.message_ids.reserve(100)
    raise Boom()


async def test_work_that_returns_is_committed_and_its_result_returned(uow: UnitOfWork) -> None:
    assert await uow.run(lambda tx: add_users(tx, "alice")[0].id) == 1
    assert await uow.run(lambda tx: tx.users.get(1)) is not None


async def test_work_that_raises_leaves_nothing_behind(uow: UnitOfWork) -> None:
    await uow.run(populate)
    before = await uow.run(everything)
    with pytest.raises(Boom):
        await uow.run(change_everything_then_fail)
    assert await uow.run(everything) == before


async def test_work_that_raises_at_once_on_an_empty_store_leaves_it_empty(uow: UnitOfWork) -> None:
    before = await uow.run(everything)

    def populate_then_fail(tx: Transaction) -> None:
        populate(tx)
        raise Boom()

    with pytest.raises(Boom):
        await uow.run(populate_then_fail)
    assert await uow.run(everything) == before
    assert await uow.run(lambda tx: add_users(tx, "alice")[0].id) == 1


async def test_the_exception_of_the_work_is_the_one_raised(uow: UnitOfWork) -> None:
    error = Boom("this one")

    def fail(tx: Transaction) -> None:
        raise error

    with pytest.raises(Boom) as raised:
        await uow.run(fail)
    assert raised.value is error


async def test_a_caught_domain_error_does_not_spoil_the_transaction(uow: UnitOfWork) -> None:
    def add_with_a_clash(tx: Transaction) -> None:
        add_users(tx, "alice")
        with pytest.raises(NameTaken):
            tx.users.add("alice", "again")
        tx.groups.create("friends", "", 1)
        with pytest.raises(NameTaken):
            tx.groups.create("friends", "again", 1)
        add_users(tx, "bob")

    await uow.run(add_with_a_clash)
    found = await uow.run(lambda tx: [tx.users.get(2), tx.users.get(3), tx.groups.get(2)])
    assert found == [User(2, "bob"), None, None]


async def test_many_tasks_at_once_each_get_a_whole_transaction(uow: UnitOfWork) -> None:
    tasks = 50
    firsts: list[int] = []

    async def one(i: int) -> None:
        def work(tx: Transaction) -> int:
            user = tx.users.add(f"user {i}", "hash")
            first = tx.message_ids.reserve(3)
            to_self = DirectMessage(first, user.id, user.name, user.id, "me", 0)
            tx.inbox.append([(user.id, to_self)], 0)
            if i % 5 == 0:
                raise Boom()
            return first

        with suppress(Boom):
            firsts.append(await uow.run(work))

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(one, i)

    def look(tx: Transaction) -> list[tuple[int, int]]:
        accounts = [tx.users.account(i) for i in range(1, tasks + 1)]
        return [(a.user.id, tx.inbox.count_after(a.user.id, 0)) for a in accounts if a is not None]

    users = await uow.run(look)
    assert users == [(i, 1) for i in range(1, len(firsts) + 1)]
    assert sorted(firsts) == list(range(1, 3 * len(firsts), 3))


async def test_cancelled_tasks_leave_whole_transactions_or_none(uow: UnitOfWork) -> None:
    done = 0

    async def one(i: int, scope: anyio.CancelScope) -> None:
        def work(tx: Transaction) -> None:
            user = tx.users.add(f"user {i}", "hash")
            tx.inbox.append([(user.id, DirectMessage(i, user.id, user.name, user.id, "me", 0))], 0)

        await uow.run(work)
        nonlocal done
        done += 1
        if done == 20:
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i, tg.cancel_scope)

    def look(tx: Transaction) -> list[int]:
        return [tx.inbox.last_pos(user_id) for user_id in range(1, 201) if tx.users.get(user_id)]

    counts = await uow.run(look)
    assert 20 <= len(counts) < 200
    assert counts == [1] * len(counts)
    after = await uow.run(lambda tx: tx.users.add("after", "hash"))
    assert after.id == len(counts) + 1
