"""Router: the writes of one inbox batch with users on other nodes are pushed together, so
their bus messages share a round trip; each is answered only once its push is done."""

from typing import Any

import anyio
import pytest

from chatserver.application.inbox_writer import InboxWrite
from chatserver.application.node import NoMetrics
from chatserver.application.router import Router
from chatserver.application.sessions import SessionRegistry
from chatserver.domain.messages import DirectMessage

pytestmark = pytest.mark.anyio


class ElsewherePresence:
    async def locate(self, user_ids: list[int]) -> dict[int, frozenset[str]]:
        return {uid: frozenset({"b"}) for uid in user_ids}


class SlowBus:
    """Each delivery takes a round trip; counts how many are on their way at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.delivered: list[int] = []

    async def deliver(self, node_id: str, user_ids: list[int], event: Any, positions: Any) -> bool:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await anyio.sleep(0.05)
        self.in_flight -= 1
        self.delivered.extend(user_ids)
        return True


async def test_a_batchs_pushes_to_other_nodes_go_together_and_each_is_answered_after() -> None:
    bus = SlowBus()
    router = Router("a", SessionRegistry(), ElsewherePresence(), bus, None, NoMetrics())  # type: ignore[arg-type]
    answered: list[tuple[int, list[int]]] = []
    rests = []
    for n in range(10):
        message = DirectMessage(
            msg_id=n, sender_id=1, sender_name="one", recipient_id=100 + n, text="hi",
            sent_at_ms=0,
        )

        def delivered(positions: Any, n: int = n) -> None:
            assert 100 + n in bus.delivered  # answered only once pushed
            answered.append((n, positions))

        write = InboxWrite([(100 + n, message)], then=router._committed, delivered=delivered)
        write.positions = [n + 1]
        rest = router._committed(write)  # as InboxWriter._call_then does, for a whole batch
        if rest is not None:
            rests.append(rest)
    assert len(rests) == 1  # the first pushes them all
    with anyio.fail_after(5):
        for rest in rests:  # as the writer does: one after the other
            await rest
    assert sorted(answered) == [(n, [n + 1]) for n in range(10)]
    assert bus.most == 10  # all on their way at once: one round trip, not ten
    # The next batch starts a list of its own.
    write = InboxWrite([(200, message)], then=router._committed, delivered=lambda p: None)
    write.positions = [11]
    rest = router._committed(write)
    assert rest is not None
    await rest
