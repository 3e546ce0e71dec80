"""The MessageIdSequence contract: ids from 1, never handed out twice, even after a restart."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatserver.domain.ports import UnitOfWork

from .adapters import Opener

pytestmark = pytest.mark.anyio


async def test_ids_start_at_one_and_follow_on(uow: UnitOfWork) -> None:
    firsts = [await uow.run(lambda tx: tx.message_ids.reserve(n)) for n in (1, 3, 2)]  # noqa: B023
    assert firsts == [1, 2, 5]
    assert await uow.run(lambda tx: tx.message_ids.reserve(1)) == 7


async def test_reserving_none_uses_up_nothing(uow: UnitOfWork) -> None:
    assert await uow.run(lambda tx: tx.message_ids.reserve(0)) == 1
    assert await uow.run(lambda tx: tx.message_ids.reserve(2)) == 1
    assert await uow.run(lambda tx: tx.message_ids.reserve(0)) == 3


async def test_a_negative_count_is_refused(uow: UnitOfWork) -> None:
    with pytest.raises(ValueError):
        await uow.run(lambda tx: tx.message_ids.reserve(-1))
    assert await uow.run(lambda tx: tx.message_ids.reserve(1)) == 1


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
async def test_reserved_blocks_never_overlap_and_increase(
    uow: UnitOfWork, counts: list[int]
) -> None:
    # One store for every example: each starts where the one before stopped.
    start = await uow.run(lambda tx: tx.message_ids.reserve(0))
    handed_out: list[int] = []
    for count in counts:
        first = await uow.run(lambda tx: tx.message_ids.reserve(count))  # noqa: B023
        handed_out.extend(range(first, first + count))
    assert handed_out == list(range(start, start + sum(counts)))


async def test_ids_are_not_handed_out_again_after_reopening(
    persistent_opener: Opener, tmp_path: Path
) -> None:
    firsts = []
    for _ in range(3):
        uow = await persistent_opener(tmp_path)
        firsts.append(await uow.run(lambda tx: tx.message_ids.reserve(10)))
        await uow.aclose()
    assert firsts == [1, 11, 21]
