"""serve keeps the garbage collector off long-lived objects by freezing them, and thaws once
the heap has doubled so that cyclic garbage frozen alive is collected after all."""

import gc
import sys
import weakref
from collections.abc import Iterator
from functools import partial

import anyio
import pytest

from chatserver.entrypoints import collector

pytestmark = pytest.mark.anyio


class Node:
    """Something that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()


async def test_what_lives_long_is_frozen() -> None:
    with anyio.move_on_after(0.3):
        await collector.keep_long_lived_frozen(every_seconds=0.05)
    assert gc.get_freeze_count() > 0
    assert collector._log_long_pauses not in gc.callbacks


async def test_garbage_frozen_alive_is_collected_once_the_heap_has_doubled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks = [1000]
    monkeypatch.setattr(sys, "getallocatedblocks", lambda: blocks[0])
    monkeypatch.setattr(collector, "THAW_AT_MOST_EVERY_SECONDS", 0.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(collector.keep_long_lived_frozen, every_seconds=0.02))
        await anyio.sleep(0.05)
        node = Node()
        gone = weakref.ref(node)
        await anyio.sleep(0.05)  # frozen alive
        del node
        await anyio.sleep(0.05)
        gc.collect()
        assert gone() is not None  # frozen: no collection sees it
        blocks[0] = 2001
        await anyio.sleep(0.1)
        assert gone() is None  # thawed and collected
        tg.cancel_scope.cancel()
