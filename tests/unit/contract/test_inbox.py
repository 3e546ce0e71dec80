"""The Inbox contract (PROTOCOL.md Version 2, "The inbox"): per user, pos 1, 2, 3, ... with no gap
and no reuse, allocated in the storing transaction; conversations, paging, read pos, device
marks and pruning."""

import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.mysql.unit_of_work import open_mysql
from chatserver.domain.errors import UnknownUser
from chatserver.domain.messages import Delivery, DirectMessage, FriendAnswer, GroupMessage, Kept
from chatserver.domain.ports import DeviceMark, Transaction, UnitOfWork

from .adapters import OPENERS, NewUnitOfWork, Opener
from .mysql_server import MYSQL
from .sample import TRICKY_TEXT, add_users, per_example

pytestmark = pytest.mark.anyio

T = TypeVar("T")

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


class Boom(Exception):
    pass


def dm(msg_id: int, sender: int, recipient: int, text: str = "hi") -> DirectMessage:
    return DirectMessage(msg_id, sender, f"user{sender}", recipient, text, T0 + msg_id)


def gm(msg_id: int, group: int, sender: int, text: str = "hi all") -> GroupMessage:
    return GroupMessage(msg_id, group, sender, f"user{sender}", text, T0 + msg_id)


def users(tx: Transaction, count: int) -> None:
    add_users(tx, *(f"user{i}" for i in range(1, count + 1)))


def positions(kept: Sequence[Kept]) -> list[int]:
    return [k.pos for k in kept]


def msg_ids(kept: Sequence[Kept]) -> list[int]:
    return [k.delivery.msg_id for k in kept]


async def test_an_empty_inbox_has_nothing_and_its_oldest_pos_is_one(uow: UnitOfWork) -> None:
    def look(tx: Transaction) -> tuple[object, ...]:
        users(tx, 1)
        inbox = tx.inbox
        return (
            inbox.last_pos(1),
            inbox.oldest_pos(1),
            inbox.after(1, 0, 10),
            inbox.count_after(1, 0),
            inbox.read_pos(1),
            inbox.marks(1),
            inbox.conversation(1, peer_id=2, limit=10),
            inbox.append([], T0),
        )

    assert await uow.run(look) == (0, 1, [], 0, 0, {}, [], [])


async def test_a_batch_mixing_users_gives_each_user_the_next_positions_in_order(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 3))
    first = [(1, dm(1, 2, 1)), (2, dm(1, 2, 1)), (1, dm(2, 3, 1)), (3, dm(2, 3, 1))]
    second = [(3, gm(3, 1, 2)), (1, gm(3, 1, 2)), (2, gm(3, 1, 2)), (1, dm(4, 1, 2))]
    assert await uow.run(lambda tx: tx.inbox.append(first, T0)) == [1, 1, 2, 1]
    assert await uow.run(lambda tx: tx.inbox.append(second, T0)) == [2, 3, 2, 4]

    def look(tx: Transaction) -> list[list[Kept]]:
        return [tx.inbox.after(user, 0, 100) for user in (1, 2, 3)]

    assert await uow.run(look) == [
        [Kept(1, dm(1, 2, 1)), Kept(2, dm(2, 3, 1)), Kept(3, gm(3, 1, 2)), Kept(4, dm(4, 1, 2))],
        [Kept(1, dm(1, 2, 1)), Kept(2, gm(3, 1, 2))],
        [Kept(1, dm(2, 3, 1)), Kept(2, gm(3, 1, 2))],
    ]
    assert await uow.run(lambda tx: [tx.inbox.last_pos(u) for u in (1, 2, 3)]) == [4, 2, 2]


@per_example
@given(
    batches=st.lists(
        st.lists(st.integers(min_value=1, max_value=4), max_size=12), min_size=1, max_size=6
    ),
    failing=st.sets(st.integers(min_value=0, max_value=5)),
)
async def test_positions_stay_contiguous_per_user_over_batches_and_rollbacks(
    new_uow: NewUnitOfWork, batches: list[list[int]], failing: set[int]
) -> None:
    """Whatever the batches and whichever of them roll back, each user's inbox holds exactly
    the committed entries at 1..n, in the order they were appended."""
    uow = await new_uow()
    await uow.run(lambda tx: users(tx, 4))
    expected: dict[int, list[int]] = defaultdict(list)
    msg_id = 0
    for number, batch in enumerate(batches):
        entries: list[tuple[int, Delivery]] = []
        for user in batch:
            msg_id += 1
            entries.append((user, dm(msg_id, 5 - user if user != 4 else 1, user)))

        def append(
            tx: Transaction, entries: list[tuple[int, Delivery]] = entries, fail: bool = False
        ) -> list[int]:
            given = tx.inbox.append(entries, T0)
            if fail:
                raise Boom()
            return given

        if number in failing:
            with pytest.raises(Boom):
                await uow.run(lambda tx, entries=entries: append(tx, entries, fail=True))
            continue
        given = await uow.run(append)
        for (user, delivery), pos in zip(entries, given, strict=True):
            expected[user].append(delivery.msg_id)
            assert pos == len(expected[user])

    def look(tx: Transaction) -> dict[int, tuple[list[int], list[int], int]]:
        return {
            user: (
                positions(kept := tx.inbox.after(user, 0, 1000)),
                msg_ids(kept),
                tx.inbox.last_pos(user),
            )
            for user in range(1, 5)
        }

    assert await uow.run(look) == {
        user: (list(range(1, len(expected[user]) + 1)), expected[user], len(expected[user]))
        for user in range(1, 5)
    }


async def test_a_rolled_back_append_leaves_no_hole(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 2))
    await uow.run(lambda tx: tx.inbox.append([(1, dm(1, 2, 1))], T0))

    def append_then_fail(tx: Transaction) -> None:
        tx.inbox.append([(1, dm(2, 2, 1)), (2, dm(2, 2, 1)), (1, dm(3, 2, 1))], T0)
        raise Boom()

    with pytest.raises(Boom):
        await uow.run(append_then_fail)
    assert await uow.run(lambda tx: tx.inbox.append([(1, dm(4, 2, 1))], T0)) == [2]

    def look(tx: Transaction) -> tuple[object, ...]:
        return (
            positions(tx.inbox.after(1, 0, 10)),
            msg_ids(tx.inbox.after(1, 0, 10)),
            [
                tx.inbox.last_pos(2),
                tx.inbox.count_after(2, 0),
            ],
        )

    assert await uow.run(look) == ([1, 2], [1, 4], [0, 0])


async def test_an_unknown_user_raises_unknown_user_and_nothing_of_the_batch_is_kept(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 2))

    def append_to_a_stranger(tx: Transaction) -> tuple[object, ...]:
        with pytest.raises(UnknownUser):
            tx.inbox.append([(1, dm(1, 2, 1)), (2, dm(1, 2, 1)), (99, dm(2, 2, 99))], T0)
        # The transaction goes on (and commits) without anything of the failed batch.
        return tuple(
            (tx.inbox.last_pos(u), tx.inbox.after(u, 0, 10), tx.inbox.count_after(u, 0))
            for u in (1, 2, 99)
        )

    nothing = ((0, [], 0), (0, [], 0), (0, [], 0))
    assert await uow.run(append_to_a_stranger) == nothing
    assert await uow.run(lambda tx: tx.inbox.append([(2, dm(3, 1, 2))], T0)) == [1]
    assert await uow.run(lambda tx: tx.inbox.after(1, 0, 10)) == []


async def test_a_message_to_oneself_takes_one_pos_and_is_its_own_conversation(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 2))
    to_self = dm(1, 1, 1, "note to self")
    assert await uow.run(lambda tx: tx.inbox.append([(1, to_self), (1, dm(2, 2, 1))], T0)) == [
        1,
        2,
    ]

    def look(tx: Transaction) -> tuple[object, ...]:
        return (
            tx.inbox.last_pos(1),
            tx.inbox.conversation(1, peer_id=1, limit=10),
            msg_ids(tx.inbox.conversation(1, peer_id=2, limit=10)),
        )

    assert await uow.run(look) == (2, [Kept(1, to_self)], [2])


async def test_a_conversation_holds_both_directions_and_only_its_own_messages(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 3))
    entries: list[tuple[int, Delivery]] = [
        (1, dm(1, 1, 2)),  # alice -> bob, alice's copy (a carbon)
        (2, dm(1, 1, 2)),
        (1, dm(2, 2, 1)),  # bob -> alice
        (2, dm(2, 2, 1)),
        (1, gm(3, 7, 3)),  # carol in group 7
        (1, dm(4, 3, 1)),  # carol -> alice
        (1, FriendAnswer(5, 3, "user3", accepted=True)),  # no conversation
        (1, gm(6, 7, 1)),
        (1, gm(7, 8, 2)),  # another group
        (1, dm(8, 1, 2)),
    ]
    await uow.run(lambda tx: tx.inbox.append(entries, T0))

    def look(tx: Transaction) -> dict[str, list[tuple[int, int]]]:
        def pairs(kept: list[Kept]) -> list[tuple[int, int]]:
            return [(k.pos, k.delivery.msg_id) for k in kept]

        inbox = tx.inbox
        return {
            "alice-bob": pairs(inbox.conversation(1, peer_id=2, limit=50)),
            "bob-alice": pairs(inbox.conversation(2, peer_id=1, limit=50)),
            "alice-carol": pairs(inbox.conversation(1, peer_id=3, limit=50)),
            "group 7": pairs(inbox.conversation(1, group_id=7, limit=50)),
            "group 8": pairs(inbox.conversation(1, group_id=8, limit=50)),
            "bob's group 7": pairs(inbox.conversation(2, group_id=7, limit=50)),
            "group 3 is not user 3": pairs(inbox.conversation(1, group_id=3, limit=50)),
        }

    assert await uow.run(look) == {
        "alice-bob": [(1, 1), (2, 2), (8, 8)],
        "bob-alice": [(1, 1), (2, 2)],
        "alice-carol": [(4, 4)],
        "group 7": [(3, 3), (6, 6)],
        "group 8": [(7, 7)],
        "bob's group 7": [],
        "group 3 is not user 3": [],
    }


async def test_conversation_pages_go_back_from_before_newest_first_each_in_pos_order(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 3))
    entries: list[tuple[int, Delivery]] = []
    for msg_id in range(1, 31):  # alice's pos = msg_id; every third is with carol
        entries.append((1, dm(msg_id, 3 if msg_id % 3 == 0 else 2, 1)))
    await uow.run(lambda tx: tx.inbox.append(entries, T0))

    def pages(tx: Transaction) -> list[list[int]]:
        found: list[list[int]] = []
        before: int | None = None
        while page := tx.inbox.conversation(1, peer_id=2, before=before, limit=7):
            found.append(positions(page))
            before = page[0].pos
        return found

    with_bob = [p for p in range(1, 31) if p % 3]
    expected = [with_bob[max(0, end - 7) : end] for end in range(len(with_bob), 0, -7)]
    assert await uow.run(pages) == expected
    assert await uow.run(lambda tx: tx.inbox.conversation(1, peer_id=3, before=10, limit=2)) == [
        Kept(6, dm(6, 3, 1)),
        Kept(9, dm(9, 3, 1)),
    ]
    assert await uow.run(lambda tx: tx.inbox.conversation(1, peer_id=3, before=3, limit=2)) == []


async def test_after_reads_from_since_in_pos_order_at_most_limit(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 2))
    await uow.run(lambda tx: tx.inbox.append([(1, dm(i, 2, 1)) for i in range(1, 11)], T0))

    def look(tx: Transaction) -> tuple[object, ...]:
        inbox = tx.inbox
        return (
            positions(inbox.after(1, 0, 3)),
            positions(inbox.after(1, 3, 3)),
            positions(inbox.after(1, 8, 5)),
            inbox.after(1, 10, 5),
            inbox.after(1, 2, 0),
            [inbox.count_after(1, since) for since in (0, 3, 9, 10, 20)],
        )

    assert await uow.run(look) == ([1, 2, 3], [4, 5, 6], [9, 10], [], [], [10, 7, 1, 0, 0])


async def test_pruning_by_age_in_batches_keeps_newer_entries_and_last_pos(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 3))
    # Days 0..4: user 1 gets two a day (one from user 2, one a group message shared with 3).
    for day in range(5):
        base = 10 * day

        def append(tx: Transaction, base: int = base, day: int = day) -> None:
            shared = gm(base + 2, 7, 2)
            tx.inbox.append([(1, dm(base + 1, 2, 1)), (1, shared), (3, shared)], T0 + day * DAY_MS)

        await uow.run(append)

    def prune(tx: Transaction) -> int:
        return tx.inbox.prune(T0 + 3 * DAY_MS, 4)  # days 0..2 are 9 entries

    assert await uow.run(prune) == 4
    assert await uow.run(prune) == 4
    assert await uow.run(prune) == 1
    assert await uow.run(prune) == 0

    def look(tx: Transaction) -> tuple[object, ...]:
        inbox = tx.inbox
        return (
            [(k.pos, k.delivery.msg_id) for k in inbox.after(1, 0, 100)],
            msg_ids(inbox.after(3, 0, 100)),
            inbox.oldest_pos(1),
            inbox.last_pos(1),
            inbox.count_after(1, 0),
            inbox.count_after(1, 7),
            positions(inbox.after(1, 2, 1)),
            positions(inbox.conversation(1, group_id=7, limit=10)),
            inbox.oldest_pos(3),
            inbox.last_pos(3),
        )

    assert await uow.run(look) == (
        [(7, 31), (8, 32), (9, 41), (10, 42)],
        [32, 42],
        7,
        10,
        4,
        3,
        [7],
        [8, 10],
        4,
        5,
    )

    # Everything goes: last_pos stays, oldest_pos is past it, and the next pos follows it.
    await uow.run(lambda tx: tx.inbox.prune(T0 + 10 * DAY_MS, 100))
    assert await uow.run(lambda tx: (tx.inbox.oldest_pos(1), tx.inbox.last_pos(1))) == (11, 10)
    assert await uow.run(lambda tx: tx.inbox.append([(1, dm(99, 2, 1))], T0)) == [11]


async def test_prune_user_deletes_up_to_pos_of_that_user_only(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 2))
    shared = [dm(i, 1, 2) for i in range(1, 6)]
    await uow.run(lambda tx: tx.inbox.append([(u, d) for d in shared for u in (1, 2)], T0))

    def prune(tx: Transaction) -> tuple[object, ...]:
        gone = tx.inbox.prune_user(1, 3)
        again = tx.inbox.prune_user(1, 3)
        return gone, again

    assert await uow.run(prune) == (3, 0)

    def look(tx: Transaction) -> tuple[object, ...]:
        return (
            positions(tx.inbox.after(1, 0, 10)),
            tx.inbox.oldest_pos(1),
            tx.inbox.last_pos(1),
            positions(tx.inbox.after(2, 0, 10)),
            msg_ids(tx.inbox.conversation(2, peer_id=1, limit=10)),
        )

    assert await uow.run(look) == ([4, 5], 4, 5, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])


async def test_the_read_pos_only_rises(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 2))

    def read(tx: Transaction) -> list[tuple[bool, int]]:
        said = []
        for pos in (3, 2, 3, 7, 0, 5):
            said.append((tx.inbox.set_read_pos(1, pos), tx.inbox.read_pos(1)))
        return said

    assert await uow.run(read) == [
        (True, 3),
        (False, 3),
        (False, 3),
        (True, 7),
        (False, 7),
        (False, 7),
    ]
    assert await uow.run(lambda tx: (tx.inbox.read_pos(1), tx.inbox.read_pos(2))) == (7, 0)


async def test_the_read_pos_rolls_back_with_its_transaction(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 1))
    await uow.run(lambda tx: tx.inbox.set_read_pos(1, 4))

    def read_then_fail(tx: Transaction) -> None:
        tx.inbox.set_read_pos(1, 9)
        raise Boom()

    with pytest.raises(Boom):
        await uow.run(read_then_fail)
    assert await uow.run(lambda tx: tx.inbox.read_pos(1)) == 4


async def test_each_device_keeps_its_own_mark(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 2))

    def mark(tx: Transaction) -> None:
        tx.inbox.set_mark(1, "phone", DeviceMark(3))
        tx.inbox.set_mark(1, "pc", DeviceMark(5, frozenset({7, 9})))
        tx.inbox.set_mark(2, "phone", DeviceMark(1))
        tx.inbox.set_mark(1, "phone", DeviceMark(4, frozenset({6})))  # moves on
        tx.inbox.set_mark(1, TRICKY_TEXT[:64], DeviceMark(0))

    await uow.run(mark)
    assert await uow.run(lambda tx: (tx.inbox.marks(1), tx.inbox.marks(2))) == (
        {
            "phone": DeviceMark(4, frozenset({6})),
            "pc": DeviceMark(5, frozenset({7, 9})),
            TRICKY_TEXT[:64]: DeviceMark(0),
        },
        {"phone": DeviceMark(1)},
    )

    def mark_then_fail(tx: Transaction) -> None:
        tx.inbox.set_mark(1, "pc", DeviceMark(12))
        tx.inbox.set_mark(1, "tablet", DeviceMark(12))
        raise Boom()

    with pytest.raises(Boom):
        await uow.run(mark_then_fail)
    assert await uow.run(lambda tx: sorted(tx.inbox.marks(1).items())) == sorted(
        {
            "phone": DeviceMark(4, frozenset({6})),
            "pc": DeviceMark(5, frozenset({7, 9})),
            TRICKY_TEXT[:64]: DeviceMark(0),
        }.items()
    )


async def test_a_mark_for_an_unknown_user_raises_unknown_user(uow: UnitOfWork) -> None:
    with pytest.raises(UnknownUser):
        await uow.run(lambda tx: tx.inbox.set_mark(5, "pc", DeviceMark(1)))
    with pytest.raises(UnknownUser):
        await uow.run(lambda tx: tx.inbox.set_read_pos(5, 1))
    assert await uow.run(lambda tx: (tx.inbox.marks(5), tx.inbox.read_pos(5))) == ({}, 0)


@per_example
@given(
    name=st.text(),
    text=st.text(min_size=1),
    sent_at_ms=st.integers(min_value=0, max_value=2**53),
    group_id=st.integers(min_value=1, max_value=2**31 - 1),
    accepted=st.booleans(),
)
@example(name=TRICKY_TEXT, text=TRICKY_TEXT, sent_at_ms=0, group_id=1, accepted=False)
async def test_every_kind_of_delivery_comes_back_equal_from_every_read(
    new_uow: NewUnitOfWork, name: str, text: str, sent_at_ms: int, group_id: int, accepted: bool
) -> None:
    uow = await new_uow()
    deliveries: list[Delivery] = [
        DirectMessage(1, 2, name, 1, text, sent_at_ms),
        GroupMessage(2, group_id, 2, name, text, sent_at_ms),
        FriendAnswer(3, 2, name, accepted=accepted),
        DirectMessage(4, 1, name, 2, text, sent_at_ms),
    ]

    def append(tx: Transaction) -> list[int]:
        users(tx, 2)
        return tx.inbox.append([(1, d) for d in deliveries], T0)

    assert await uow.run(append) == [1, 2, 3, 4]

    def look(tx: Transaction) -> tuple[object, ...]:
        return (
            tx.inbox.after(1, 0, 10),
            tx.inbox.conversation(1, peer_id=2, limit=10),
            tx.inbox.conversation(1, group_id=group_id, limit=10),
        )

    assert await uow.run(look) == (
        [Kept(i, d) for i, d in enumerate(deliveries, start=1)],
        [Kept(1, deliveries[0]), Kept(4, deliveries[3])],
        [Kept(2, deliveries[1])],
    )


def message_rows(opener: Opener, directory: Path) -> set[int]:
    """The msg_ids of the message rows a persistent store keeps (behind the port)."""
    if opener is OPENERS["sqlite"]:
        with closing(sqlite3.connect(directory / "chat.sqlite3")) as connection:
            return {row[0] for row in connection.execute("SELECT msg_id FROM inbox_message")}
    database = MYSQL.shared_database().rsplit("/", 1)[1]
    return {int(row[0]) for row in MYSQL.execute(f"SELECT msg_id FROM `{database}`.inbox_message")}


async def test_a_message_is_kept_once_and_goes_with_its_last_entry(
    persistent_opener: Opener, tmp_path: Path
) -> None:
    uow = await persistent_opener(tmp_path)
    try:
        await uow.run(lambda tx: users(tx, 3))
        shared = gm(1, 7, 2)  # one row, three entries
        await uow.run(lambda tx: tx.inbox.append([(1, shared), (2, shared), (3, shared)], T0))
        await uow.run(
            lambda tx: tx.inbox.append(
                [(1, dm(2, 2, 1)), (2, dm(2, 2, 1)), (1, dm(3, 3, 1))], T0 + DAY_MS
            )
        )
        await uow.run(lambda tx: tx.inbox.append([(3, dm(4, 3, 3))], T0 + 2 * DAY_MS))
        assert message_rows(persistent_opener, tmp_path) == {1, 2, 3, 4}

        await uow.run(lambda tx: tx.inbox.prune_user(1, 3))  # 1, 2, 3 stay for others
        assert message_rows(persistent_opener, tmp_path) == {1, 2, 4}
        assert await uow.run(lambda tx: tx.inbox.prune(T0 + 1, 1)) == 1  # one of 1's two left
        assert message_rows(persistent_opener, tmp_path) == {1, 2, 4}
        assert await uow.run(lambda tx: tx.inbox.prune(T0 + DAY_MS + 1, 100)) == 2
        assert message_rows(persistent_opener, tmp_path) == {4}
        assert await uow.run(lambda tx: tx.inbox.after(3, 0, 10)) == [Kept(2, dm(4, 3, 3))]
    finally:
        await uow.aclose()


async def test_two_nodes_appending_to_one_user_at_once_never_share_or_skip_a_pos() -> None:
    """Two units of work on one MariaDB database stand for two nodes; their transactions run
    in worker threads on their own connections, so they overlap for real."""
    url = await anyio.to_thread.run_sync(MYSQL.new_database)
    nodes = [await open_mysql(url, pool_size=4) for _ in range(2)]
    try:
        await nodes[0].run(lambda tx: users(tx, 3))
        batches = 40
        got: dict[int, list[int]] = {1: [], 2: [], 3: []}

        async def node(number: int, uow: UnitOfWork) -> None:
            async def one(batch: int) -> None:
                msg_id = 1 + 3 * (batches * number + batch)
                entries: list[tuple[int, Delivery]] = [
                    (1, dm(msg_id, 2, 1)),
                    (2 + number, dm(msg_id, 2, 1)),
                    (1, dm(msg_id + 1, 3, 1)),
                ]
                given = await uow.run(lambda tx: tx.inbox.append(entries, T0))
                for (user, _), pos in zip(entries, given, strict=True):
                    got[user].append(pos)

            async with anyio.create_task_group() as tg:
                for batch in range(batches):
                    tg.start_soon(one, batch)

        async with anyio.create_task_group() as tg:
            for number, uow in enumerate(nodes):
                tg.start_soon(node, number, uow)

        assert sorted(got[1]) == list(range(1, 4 * batches + 1))
        assert sorted(got[2]) == sorted(got[3]) == list(range(1, batches + 1))

        def look(tx: Transaction) -> tuple[list[int], int]:
            return positions(tx.inbox.after(1, 0, 1000)), tx.inbox.last_pos(1)

        assert await nodes[1].run(look) == (list(range(1, 4 * batches + 1)), 4 * batches)
    finally:
        for uow in nodes:
            await uow.aclose()


async def test_pruning_a_big_inbox_goes_in_short_batches_oldest_first(
    persistent_opener: Opener, tmp_path: Path
) -> None:
    """20,000 entries over 40 days (kept_ms from a fake clock), 100 users; a 30-day window
    pruned in batches of 500: each batch is one short transaction found through the kept_ms
    index, whatever the size of the table, and only entries older than the window go."""
    uow = await persistent_opener(tmp_path)
    try:
        await uow.run(lambda tx: users(tx, 100))
        per_day = 500
        for day in range(40):

            def append(tx: Transaction, day: int = day) -> None:
                first = 1 + day * per_day
                entries: list[tuple[int, Delivery]] = [
                    (1 + i % 100, dm(first + i, 1 + (i + 1) % 100, 1 + i % 100))
                    for i in range(per_day)
                ]
                tx.inbox.append(entries, T0 + day * DAY_MS)

            await uow.run(append)
        now = T0 + 40 * DAY_MS
        window = now - 30 * DAY_MS  # days 0..9 go: 5,000 entries
        took: list[float] = []
        pruned: list[int] = []
        while True:
            start = time.perf_counter()
            count = await uow.run(lambda tx: tx.inbox.prune(window, 500))
            took.append(time.perf_counter() - start)
            if not count:
                break
            pruned.append(count)
        print(
            f"prune of 500 of 20,000 entries: median {sorted(took)[len(took) // 2] * 1e3:.1f} ms,"
            f" slowest {max(took) * 1e3:.1f} ms"
        )
        assert pruned == [500] * 10
        assert max(took) < 1.0  # a generous bound for a loaded machine; typically ~10 ms

        def look(tx: Transaction) -> tuple[list[int], list[int], int]:
            return (
                [tx.inbox.oldest_pos(u) for u in (1, 50, 100)],
                [tx.inbox.last_pos(u) for u in (1, 50, 100)],
                sum(tx.inbox.count_after(u, 0) for u in range(1, 101)),
            )

        # Each user got 5 entries a day: 50 went, 150 stay, last_pos stays 200.
        assert await uow.run(look) == ([51, 51, 51], [200, 200, 200], 15_000)
        assert len(message_rows(persistent_opener, tmp_path)) == 15_000
    finally:
        await uow.aclose()


async def test_a_rolled_back_prune_leaves_every_entry_and_conversation_as_it_was(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: users(tx, 3))
    for day in range(3):

        def append(tx: Transaction, day: int = day) -> None:
            base = 10 * day
            tx.inbox.append(
                [(1, dm(base + 1, 2, 1)), (1, gm(base + 2, 7, 3)), (2, dm(base + 1, 2, 1))],
                T0 + day * DAY_MS,
            )

        await uow.run(append)

    def everything(tx: Transaction) -> tuple[object, ...]:
        return tuple(
            (
                tx.inbox.after(u, 0, 100),
                tx.inbox.oldest_pos(u),
                tx.inbox.count_after(u, 0),
                tx.inbox.conversation(u, peer_id=2 if u == 1 else 1, limit=100),
                tx.inbox.conversation(u, group_id=7, limit=100),
            )
            for u in (1, 2)
        )

    before = await uow.run(everything)

    def prune_then_fail(tx: Transaction) -> None:
        assert tx.inbox.prune(T0 + 2 * DAY_MS, 100) == 6
        assert tx.inbox.prune_user(1, 5) == 1
        tx.inbox.append([(1, dm(99, 2, 1))], T0 + 3 * DAY_MS)
        assert positions(tx.inbox.conversation(1, peer_id=2, limit=100)) == [7]
        raise Boom()

    with pytest.raises(Boom):
        await uow.run(prune_then_fail)
    assert await uow.run(everything) == before
    # And committed, the same prune leaves the newest day.
    await uow.run(lambda tx: (tx.inbox.prune(T0 + 2 * DAY_MS, 100), tx.inbox.prune_user(1, 5)))
    assert await uow.run(
        lambda tx: (
            positions(tx.inbox.conversation(1, peer_id=2, limit=100)),
            positions(tx.inbox.conversation(1, group_id=7, limit=100)),
            positions(tx.inbox.conversation(2, peer_id=1, limit=100)),
        )
    ) == ([], [6], [3])


async def test_the_memory_inbox_forgets_pruned_positions_of_its_conversations() -> None:
    """The memory store's conversation index shrinks with pruning (no unbounded growth)."""
    uow = MemoryUnitOfWork()
    await uow.run(lambda tx: users(tx, 2))
    for day in range(10):
        await uow.run(
            lambda tx, day=day: tx.inbox.append(
                [(1, dm(10 * day + i, 2, 1)) for i in range(10)], T0 + day * DAY_MS
            )
        )
    await uow.run(lambda tx: tx.inbox.prune(T0 + 8 * DAY_MS, 1000))
    assert sum(len(p) for p in uow.database.conversations.values()) == 20
    await uow.run(lambda tx: tx.inbox.prune_user(1, 95))
    assert sum(len(p) for p in uow.database.conversations.values()) == 5


# --------------------------------------------------------------------------- any sequence


Op = tuple[str, int, int, tuple[int, ...], bool]  # (kind, a, b, users, roll back)

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 2),  # days the clock moves on first
            st.integers(1, 3),  # sender
            st.lists(st.integers(1, 3), min_size=1, max_size=6).map(tuple),
            st.booleans(),
        ),
        st.tuples(
            st.just("prune"), st.integers(0, 6), st.integers(1, 5), st.just(()), st.booleans()
        ),
        st.tuples(
            st.just("prune_user"), st.integers(1, 3), st.integers(0, 12), st.just(()), st.booleans()
        ),
        st.tuples(
            st.just("read"), st.integers(1, 3), st.integers(0, 12), st.just(()), st.booleans()
        ),
    ),
    max_size=14,
)


@per_example
@given(operations=ops)
async def test_any_sequence_of_appends_prunes_and_reads_keeps_every_promise(
    new_uow: NewUnitOfWork, operations: list[Op]
) -> None:
    """Against a model: positions 1..n per user with no reuse; after, count_after, oldest_pos,
    last_pos and conversations agree with what is kept; prune takes only entries older than
    its time, at most limit, as many as there are up to limit; a rolled-back operation
    changes nothing; the read pos only rises."""
    uow = await new_uow()
    await uow.run(lambda tx: users(tx, 3))
    # user -> pos -> (msg_id, kept_ms, peer)
    model: dict[int, dict[int, tuple[int, int, int]]] = {1: {}, 2: {}, 3: {}}
    last = {1: 0, 2: 0, 3: 0}
    read = {1: 0, 2: 0, 3: 0}
    day = 0
    msg_id = 0

    async def run(work: Callable[[Transaction], T], roll_back: bool) -> T | None:
        if not roll_back:
            return await uow.run(work)

        def fail(tx: Transaction) -> T:
            work(tx)
            raise Boom()

        with pytest.raises(Boom):
            await uow.run(fail)
        return None

    for kind, a, b, to, roll_back in operations:
        if kind == "append":
            day += a
            entries: list[tuple[int, Delivery]] = []
            for recipient in to:
                msg_id += 1
                entries.append((recipient, dm(msg_id, b, recipient)))
            given = await run(
                lambda tx, e=entries, d=day: tx.inbox.append(e, T0 + d * DAY_MS), roll_back
            )
            if given is not None:
                for (user, delivery), pos in zip(entries, given, strict=True):
                    assert pos == last[user] + 1
                    last[user] = pos
                    peer = b if user != b else user
                    model[user][pos] = (delivery.msg_id, T0 + day * DAY_MS, peer)
        elif kind == "prune":
            cutoff = T0 + a * DAY_MS
            gone = await run(lambda tx, c=cutoff, n=b: tx.inbox.prune(c, n), roll_back)
            if gone is not None:
                eligible = sum(1 for u in model for e in model[u].values() if e[1] < cutoff)
                assert gone == min(b, eligible)
                for user in model:
                    kept = set(
                        positions(await uow.run(lambda tx, u=user: tx.inbox.after(u, 0, 999)))
                    )
                    for pos in set(model[user]) - kept:
                        assert model[user].pop(pos)[1] < cutoff
        elif kind == "prune_user":
            gone = await run(lambda tx, u=a, p=b: tx.inbox.prune_user(u, p), roll_back)
            if gone is not None:
                old = [pos for pos in model[a] if pos <= b]
                assert gone == len(old)
                for pos in old:
                    del model[a][pos]
        else:
            raised = await run(lambda tx, u=a, p=b: tx.inbox.set_read_pos(u, p), roll_back)
            if raised is not None:
                assert raised == (b > read[a])
                read[a] = max(read[a], b)

        def look(tx: Transaction) -> dict[int, tuple[object, ...]]:
            return {
                u: (
                    [(k.pos, k.delivery.msg_id) for k in tx.inbox.after(u, 0, 999)],
                    tx.inbox.last_pos(u),
                    tx.inbox.oldest_pos(u),
                    [tx.inbox.count_after(u, since) for since in (0, 2, 5)],
                    tx.inbox.read_pos(u),
                    {
                        peer: positions(tx.inbox.conversation(u, peer_id=peer, limit=999))
                        for peer in (1, 2, 3)
                    },
                    positions(tx.inbox.conversation(u, peer_id=1, before=6, limit=2)),
                )
                for u in (1, 2, 3)
            }

        def expected(u: int) -> tuple[object, ...]:
            kept = sorted(model[u].items())
            with_1 = [pos for pos, e in kept if e[2] == 1]
            return (
                [(pos, e[0]) for pos, e in kept],
                last[u],
                kept[0][0] if kept else last[u] + 1,
                [sum(1 for pos in model[u] if pos > since) for since in (0, 2, 5)],
                read[u],
                {peer: [pos for pos, e in kept if e[2] == peer] for peer in (1, 2, 3)},
                [pos for pos in with_1 if pos < 6][-2:],
            )

        assert await uow.run(look) == {u: expected(u) for u in (1, 2, 3)}


async def test_two_nodes_writing_marks_reads_and_prunes_at_once_never_deadlock() -> None:
    """What the group commit of two nodes does at once on one MariaDB database: batches of
    entries for overlapping users (listed in different orders), marks, read positions, and a
    pruner; no transaction fails (a deadlock or a lock wait timeout would be errno 11 for the
    senders of a whole batch), every user's positions are 1..n with none reused, and what
    the pruner leaves is a run up to last_pos (the two nodes' batches carry kept times that
    interleave, as two nodes' clocks would)."""
    url = await anyio.to_thread.run_sync(MYSQL.new_database)
    nodes = [await open_mysql(url, pool_size=4) for _ in range(2)]
    try:
        await nodes[0].run(lambda tx: users(tx, 6))
        rounds = 30
        appended: dict[int, int] = defaultdict(int)

        async def node(number: int, uow: UnitOfWork) -> None:
            async def one(i: int) -> None:
                order = [1, 2, 3, 4, 5, 6] if (i + number) % 2 else [6, 5, 4, 3, 2, 1]
                msg_id = 1 + 10 * (rounds * number + i)
                entries: list[tuple[int, Delivery]] = [
                    (user, dm(msg_id + k, 7 - user, user)) for k, user in enumerate(order)
                ]

                def work(tx: Transaction) -> list[int]:
                    given = tx.inbox.append(entries, T0 + i)
                    for user in reversed(order) if i % 3 else order:
                        tx.inbox.set_mark(user, "phone", DeviceMark(i))
                        tx.inbox.set_read_pos(user, i)
                    return given

                await uow.run(work)
                for user in order:
                    appended[user] += 1

            async with anyio.create_task_group() as tg:
                for i in range(rounds):
                    tg.start_soon(one, i)

        async def pruner() -> None:
            for cutoff in range(0, rounds, 3):
                await nodes[1].run(lambda tx, c=cutoff: tx.inbox.prune(T0 + c, 20))
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            for number, uow in enumerate(nodes):
                tg.start_soon(node, number, uow)
            tg.start_soon(pruner)

        def look(tx: Transaction) -> dict[int, tuple[int, bool]]:
            found = {}
            for user in range(1, 7):
                kept = positions(tx.inbox.after(user, 0, 1000))
                last = tx.inbox.last_pos(user)
                tail = kept == list(range(last - len(kept) + 1, last + 1))
                found[user] = (last, tail and len(kept) == tx.inbox.count_after(user, 0))
            return found

        assert await nodes[0].run(look) == {u: (2 * rounds, True) for u in range(1, 7)}
        assert dict(appended) == {u: 2 * rounds for u in range(1, 7)}
    finally:
        for uow in nodes:
            await uow.aclose()


async def test_pruning_never_leaves_a_hole_when_kept_times_are_out_of_pos_order(
    uow: UnitOfWork,
) -> None:
    """Two nodes whose clocks differ keep pos 1 at 10:00:05 and pos 2 at 10:00:00. A window
    ending at 10:00:03 must not take pos 2 and leave pos 1: a session syncing from 0 would
    see 1, 3 with nothing said about 2. Either both go or neither does."""
    await uow.run(lambda tx: users(tx, 2))
    await uow.run(lambda tx: tx.inbox.append([(1, dm(1, 2, 1)), (2, dm(1, 2, 1))], T0 + 5_000))
    await uow.run(lambda tx: tx.inbox.append([(1, dm(2, 2, 1))], T0))
    await uow.run(lambda tx: tx.inbox.append([(1, dm(3, 2, 1))], T0 + 9_000))
    await uow.run(lambda tx: tx.inbox.prune(T0 + 3_000, 100))

    def look(tx: Transaction) -> tuple[list[int], int, int, list[int]]:
        return (
            positions(tx.inbox.after(1, 0, 10)),
            tx.inbox.oldest_pos(1),
            tx.inbox.count_after(1, 0),
            positions(tx.inbox.after(2, 0, 10)),
        )

    kept, oldest, count, others = await uow.run(look)
    assert kept in ([1, 2, 3], [3])
    assert (oldest, count) == (kept[0], len(kept))
    assert others == [1]  # bob's copy of message 1 is younger than the window
    # Once the window passes both, both go, and nothing else.
    await uow.run(lambda tx: tx.inbox.prune(T0 + 6_000, 100))
    assert await uow.run(lambda tx: positions(tx.inbox.after(1, 0, 10))) == [3]


async def test_set_marks_keeps_many_marks_at_once_or_none_of_them(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: users(tx, 3))
    await uow.run(lambda tx: tx.inbox.set_mark(1, "pc", DeviceMark(1)))
    marks = {
        (2, "phone"): DeviceMark(4, frozenset({6, 9})),
        (1, "pc"): DeviceMark(7),
        (1, "phone"): DeviceMark(2),
        (3, "pc"): DeviceMark(0),
    }
    await uow.run(lambda tx: tx.inbox.set_marks(marks))
    expected = (
        {"pc": DeviceMark(7), "phone": DeviceMark(2)},
        {"phone": DeviceMark(4, frozenset({6, 9}))},
        {"pc": DeviceMark(0)},
    )
    look = lambda tx: tuple(tx.inbox.marks(u) for u in (1, 2, 3))  # noqa: E731

    assert await uow.run(look) == expected

    def with_a_stranger(tx: Transaction) -> None:
        with pytest.raises(UnknownUser):
            tx.inbox.set_marks({(1, "pc"): DeviceMark(9), (99, "pc"): DeviceMark(1)})

    await uow.run(with_a_stranger)  # the transaction goes on without any of them
    assert await uow.run(look) == expected
    many = {(1 + i % 3, f"device {i}"): DeviceMark(i) for i in range(1_200)}
    await uow.run(lambda tx: tx.inbox.set_marks(many))
    assert await uow.run(lambda tx: sum(len(tx.inbox.marks(u)) for u in (1, 2, 3))) == 1_204
    moved = {key: DeviceMark(5_000) for key in many}
    with pytest.raises(UnknownUser):
        await uow.run(lambda tx: tx.inbox.set_marks({**moved, (99, "x"): DeviceMark(1)}))

    def unchanged(tx: Transaction) -> bool:
        return all(
            tx.inbox.marks(u)[device] == mark for (u, device), mark in list(many.items())[::97]
        )

    assert await uow.run(unchanged)


async def test_an_unknown_user_after_thousands_of_others_keeps_nothing_of_the_batch(
    uow: UnitOfWork,
) -> None:
    """A batch too big for one statement (the stores raise the users' heads in chunks): a
    stranger in the last chunk undoes the chunks before it."""
    count = 2_100
    await uow.run(lambda tx: users(tx, count))
    shared = gm(1, 7, 1)

    def append_with_a_stranger(tx: Transaction) -> tuple[int, int, int, list[Kept]]:
        entries: list[tuple[int, Delivery]] = [(u, shared) for u in range(1, count + 1)]
        with pytest.raises(UnknownUser):
            tx.inbox.append([*entries, (count + 50, shared)], T0)
        return (
            tx.inbox.last_pos(1),
            tx.inbox.last_pos(count // 2),
            tx.inbox.last_pos(count),
            tx.inbox.after(count, 0, 10),
        )

    assert await uow.run(append_with_a_stranger) == (0, 0, 0, [])
    assert await uow.run(lambda tx: tx.inbox.append([(1, shared), (count, shared)], T0)) == [1, 1]
