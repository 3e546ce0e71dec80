"""The FileRepository (PROTOCOL.md Version 2, "Files"), on every adapter: rows, the daily
quota's count, who a file went to, and collection: a file goes with the last kept message
that refers to it, its bytes once no file names them, and nothing else goes."""

import pytest

from chatserver.application.pruning import collect_files, prune_once
from chatserver.domain.messages import DirectMessage, FileRef, GroupMessage
from chatserver.domain.ports import Transaction, UnitOfWork

from .sample import add_users

pytestmark = pytest.mark.anyio

DAY_MS = 86_400_000
SHA_A, SHA_B = "a" * 64, "b" * 64


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


class Store:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete(self, sha256: str) -> None:
        self.deleted.append(sha256)


async def test_rows_quota_and_readers(uow: UnitOfWork) -> None:
    def work(tx: Transaction) -> tuple[object, ...]:
        alice, bob = add_users(tx, "alice", "bob")
        first = tx.files.add(alice.id, "a.png", 100, "image/png", 1_000)
        second = tx.files.add(alice.id, "b.bin", 50, "application/zip", 2_000)
        tx.files.add(bob.id, "c", 7, "text/plain", 2_000)
        done = tx.files.complete(first.id, SHA_A)
        tx.files.refer(first.id, 11, None, bob.id, 3_000)
        tx.files.refer(first.id, 12, 5, None, 3_000)
        stored = tx.files.get(first.id)
        assert stored is not None and tx.files.get(second.id) is not None
        return (done, tx.files.complete(999, SHA_B), stored.sha256, stored.name,
                tx.files.get(second.id).sha256,  # type: ignore[union-attr]
                tx.files.uploaded_since(alice.id, 0), tx.files.uploaded_since(alice.id, 1_500),
                tx.files.readers(first.id), tx.files.readers(second.id), tx.files.get(999))

    assert await uow.run(work) == (
        True, False, SHA_A, "a.png", None, 150, 50,
        (frozenset({2}), frozenset({5})), (frozenset(), frozenset()), None,
    )


async def test_a_file_goes_with_the_last_kept_message_that_carries_it(uow: UnitOfWork) -> None:
    clock, store = Clock(10 * DAY_MS), Store()

    def setup(tx: Transaction) -> tuple[int, int, int]:
        alice, bob = add_users(tx, "alice", "bob")
        old = tx.files.add(alice.id, "old", 3, "text/plain", clock.now)
        tx.files.complete(old.id, SHA_A)
        twin = tx.files.add(bob.id, "same bytes", 3, "text/plain", clock.now)
        tx.files.complete(twin.id, SHA_A)
        ref = FileRef(old.id, "old", 3, "text/plain", SHA_A)
        message = DirectMessage(1, alice.id, "alice", bob.id, "", clock.now, file=ref)
        tx.inbox.append([(bob.id, message), (alice.id, message)], clock.now)
        tx.files.refer(old.id, 1, None, bob.id, clock.now)
        twin_ref = FileRef(twin.id, "same bytes", 3, "text/plain", SHA_A)
        later = GroupMessage(2, 9, bob.id, "bob", "", clock.now + 2 * DAY_MS, file=twin_ref)
        tx.inbox.append([(alice.id, later)], clock.now + 2 * DAY_MS)
        tx.files.refer(twin.id, 2, 9, None, clock.now + 2 * DAY_MS)
        unsent = tx.files.add(alice.id, "never sent", 4, "text/plain", clock.now)
        tx.files.complete(unsent.id, SHA_B)
        return old.id, twin.id, unsent.id

    old, twin, unsent = await uow.run(setup)
    assert await collect_files(uow, clock, store) == 0  # everything is young or referred
    # The first message leaves a 1-day window; the second one is still kept.
    clock.now += DAY_MS + DAY_MS // 2
    assert await prune_once(uow, clock, 1) > 0
    assert await collect_files(uow, clock, store) == 1
    # The unsent file's bytes went; the twin of the old file keeps the shared bytes.
    assert store.deleted == [SHA_B]

    def rows(tx: Transaction) -> tuple[bool, bool, bool]:
        return (tx.files.get(old) is None, tx.files.get(twin) is None,
                tx.files.get(unsent) is None)

    assert await uow.run(rows) == (True, False, True)
    clock.now += 2 * DAY_MS  # the second message leaves the window: the bytes go too
    await prune_once(uow, clock, 1)
    assert await collect_files(uow, clock, store) == 1
    assert store.deleted == [SHA_B, SHA_A]
    assert await uow.run(rows) == (True, True, True)


async def test_a_chat_with_a_file_comes_back_from_the_inbox_with_it(uow: UnitOfWork) -> None:
    def work(tx: Transaction) -> list[object]:
        alice, bob = add_users(tx, "alice", "bob")
        ref = FileRef(3, "cat.png", 10, "image/png", SHA_A)
        tx.inbox.append([(bob.id, DirectMessage(1, alice.id, "alice", bob.id, "", 5, file=ref)),
                         (bob.id, GroupMessage(2, 9, alice.id, "alice", "x", 6, file=ref))], 6)
        return [kept.delivery.file for kept in tx.inbox.after(bob.id, 0, 10)]  # type: ignore[union-attr]

    ref = FileRef(3, "cat.png", 10, "image/png", SHA_A)
    assert await uow.run(work) == [ref, ref]
