"""The webhook deliverer on the memory adapter: order per conversation while another backs off,
one delivering node among several, backoff with jitter; and the body and its signature."""

import anyio
import anyio.lowlevel
import orjson
import pytest

import chatserver
from chatserver.adapters.memory.repositories import MemoryDatabase
from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.webhook import encode_event, sign
from chatserver.application.hooks import AccountCreated, FriendRequested, GroupFounded
from chatserver.application.webhooks import (
    WebhookDeliverer,
    WebhookLimits,
    WebhookRecorder,
    WebhookRejected,
    conversation_of,
    drop_dead,
    list_dead,
    retry_dead,
)
from chatserver.domain.messages import DirectMessage, GroupMessage
from chatserver.domain.users import User

pytestmark = pytest.mark.anyio

FAST = WebhookLimits(retry_seconds=0.01, retry_max_seconds=0.04, lease_seconds=30)


class ManualClock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def now_ms(self) -> int:
        return self.ms


class Receiver:
    """Takes bodies, except that it refuses the first `refusals` POSTs of one conversation."""

    def __init__(self, refuse: str = "", refusals: int = 0) -> None:
        self.taken: list[dict[str, object]] = []
        self.refuse, self.refusals, self.attempts = refuse, refusals, 0

    async def send(self, body: str) -> bool:
        self.attempts += 1
        data = orjson.loads(body)
        await anyio.lowlevel.checkpoint()
        if data["conversation"] == self.refuse and self.refusals > 0:
            self.refusals -= 1
            return False
        self.taken.append(data)
        return True

    async def aclose(self) -> None:
        pass


def encode(event_id: str, event: object) -> str:
    assert isinstance(event, DirectMessage | GroupMessage)
    return orjson.dumps(
        {"event_id": event_id, "conversation": conversation_of(event), "msg_id": event.msg_id}
    ).decode()


def chat(msg_id: int, a: int, b: int) -> DirectMessage:
    return DirectMessage(msg_id, a, f"u{a}", b, "hi", 0)


async def write(uow: MemoryUnitOfWork, events: list[DirectMessage]) -> None:
    rows = WebhookRecorder(encode).rows(events)  # type: ignore[arg-type]
    await uow.run(lambda tx: tx.webhooks.add(rows, 5))


async def deliver_all(deliverer: WebhookDeliverer, uow: MemoryUnitOfWork) -> None:
    with anyio.fail_after(10):
        while await uow.run(lambda tx: tx.webhooks.pending(1)):
            if not await deliverer.deliver_once():
                await anyio.sleep(0.005)


async def test_a_conversation_that_fails_waits_in_order_while_others_go_on() -> None:
    uow = MemoryUnitOfWork()
    events = [chat(n, 1 + n % 3, 10) for n in range(1, 31)]  # three conversations
    await write(uow, events)
    receiver = Receiver(refuse="users:1:10", refusals=4)
    deliverer = WebhookDeliverer(uow, ManualClock(), receiver, "a", FAST)

    assert await deliverer.deliver_once()  # the other two conversations went through
    first_round = [m["msg_id"] for m in receiver.taken]
    assert sorted(first_round) == [n for n in range(1, 31) if n % 3 != 0]
    await deliver_all(deliverer, uow)

    assert receiver.attempts == 30 + 4
    for conversation in ("users:1:10", "users:2:10", "users:3:10"):
        got = [m["msg_id"] for m in receiver.taken if m["conversation"] == conversation]
        assert got == sorted(got) and len(got) == 10
    assert deliverer.delivered == 30 and deliverer.failed == 4


async def test_one_node_of_several_delivers_and_another_takes_over_when_it_stops() -> None:
    database = MemoryDatabase()
    clock = ManualClock()
    receivers = {"a": Receiver(), "b": Receiver()}
    nodes = {
        name: WebhookDeliverer(MemoryUnitOfWork(database), clock, receivers[name], name, FAST)
        for name in receivers
    }
    uow = MemoryUnitOfWork(database)
    await write(uow, [chat(n, 1, 2) for n in range(1, 11)])

    assert await nodes["a"].deliver_once()  # a takes the lease, and delivers
    assert not await nodes["b"].deliver_once()
    await write(uow, [chat(n, 1, 2) for n in range(11, 21)])
    assert not await nodes["b"].deliver_once()  # a's lease lasts
    assert (nodes["a"].leading, nodes["b"].leading) == (True, False)

    clock.ms += 31_000  # a stopped renewing; its lease lapsed
    await deliver_all(nodes["b"], uow)
    assert [m["msg_id"] for m in receivers["a"].taken] == list(range(1, 11))
    assert [m["msg_id"] for m in receivers["b"].taken] == list(range(11, 21))
    assert not await nodes["a"].deliver_once()  # b holds it now


async def test_a_node_that_stops_cleanly_gives_the_lease_up_at_once() -> None:
    database, clock = MemoryDatabase(), ManualClock()
    a = WebhookDeliverer(MemoryUnitOfWork(database), clock, Receiver(), "a", FAST)
    b = WebhookDeliverer(MemoryUnitOfWork(database), clock, Receiver(), "b", FAST)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(a.run)
        with anyio.fail_after(5):
            while not a.leading:  # noqa: ASYNC110 (polled state)
                await anyio.sleep(0.01)
        assert not await b.deliver_once() and not b.leading
        tasks.cancel_scope.cancel()
    await b.deliver_once()
    assert b.leading and not a.leading


async def test_retries_double_with_jitter_up_to_the_ceiling() -> None:
    limits = WebhookLimits(retry_seconds=1.0, retry_max_seconds=8.0)
    for draw, share in ((0.0, 0.5), (1.0, 1.0)):
        deliverer = WebhookDeliverer(
            MemoryUnitOfWork(),
            ManualClock(),
            Receiver(),
            "a",
            limits,
            random=lambda draw=draw: draw,
        )
        waits = []
        for _ in range(6):
            before = anyio.current_time()
            assert deliverer._back_off("c", False, "not taken") is None
            waits.append(deliverer._backoff["c"].due - before)
        # Time passes between reading the clock here and there: a loaded machine's few ms.
        assert waits == pytest.approx([share * s for s in (1, 2, 4, 8, 8, 8)], abs=0.05)


async def test_the_deliverer_reports_the_outbox_depth_and_the_oldest_age() -> None:
    uow, clock = MemoryUnitOfWork(), ManualClock()
    await write(uow, [chat(n, 1, 2) for n in range(1, 4)])
    receiver = Receiver(refuse="users:1:2", refusals=100)
    deliverer = WebhookDeliverer(uow, clock, receiver, "a", FAST)
    clock.ms = 5 + 2_500
    assert not await deliverer.deliver_once()
    assert (deliverer.depth, deliverer.oldest_age_seconds()) == (3, 2.5)


class Refuser(Receiver):
    """Refuses (a 4xx) every POST of one msg_id; takes the rest."""

    def __init__(self, msg_id: int) -> None:
        super().__init__()
        self.msg_id = msg_id

    async def send(self, body: str) -> bool:
        if orjson.loads(body)["msg_id"] == self.msg_id:
            self.attempts += 1
            raise WebhookRejected("HTTP 422")
        return await super().send(body)


async def test_an_event_refused_again_and_again_is_set_aside_and_its_conversation_goes_on() -> None:
    uow = MemoryUnitOfWork()
    await write(uow, [chat(n, 1, 2) for n in range(1, 11)])  # one conversation
    receiver = Refuser(msg_id=3)
    limits = WebhookLimits(retry_seconds=0.01, retry_max_seconds=0.02, dead_after_rejections=4)
    deliverer = WebhookDeliverer(uow, ManualClock(), receiver, "a", limits)

    await deliver_all(deliverer, uow)

    assert [m["msg_id"] for m in receiver.taken] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert receiver.attempts == 9 + 4
    dead = await list_dead(uow)
    assert [orjson.loads(d.body)["msg_id"] for d in dead] == [3]
    assert dead[0].reason == "refused 4 times (last: HTTP 422)"
    assert deliverer.dead == 1 and deliverer.depth == 0

    # The operator fixed the receiver and retries it: it goes out, after the rest.
    receiver.msg_id = -1
    assert await retry_dead(uow, None) == 1
    await deliver_all(deliverer, uow)
    assert [m["msg_id"] for m in receiver.taken][-1] == 3
    assert await list_dead(uow) == [] and await drop_dead(uow, None) == 0


async def test_a_receiver_that_is_down_sets_nothing_aside() -> None:
    uow, clock = MemoryUnitOfWork(), ManualClock()
    await write(uow, [chat(n, 1, 2) for n in range(1, 4)])
    receiver = Receiver(refuse="users:1:2", refusals=1_000)  # a 5xx or a timeout, every time
    limits = WebhookLimits(retry_seconds=0.001, retry_max_seconds=0.001, dead_after_seconds=0.05)
    deliverer = WebhookDeliverer(uow, clock, receiver, "a", limits)
    with anyio.move_on_after(0.3):
        while True:
            await deliverer.deliver_once()
            await anyio.sleep(0.002)
    assert receiver.attempts > 20 and await list_dead(uow) == []
    assert len(await uow.run(lambda tx: tx.webhooks.pending(10))) == 3


async def test_an_event_failing_for_long_while_others_go_through_is_set_aside() -> None:
    uow = MemoryUnitOfWork()
    await write(uow, [chat(1, 1, 2), chat(2, 1, 2), chat(3, 5, 6)])
    receiver = Receiver(refuse="users:1:2", refusals=1)  # msg 1 fails once, then would pass
    limits = WebhookLimits(retry_seconds=0.2, retry_max_seconds=0.2, dead_after_seconds=0.0)
    deliverer = WebhookDeliverer(uow, ManualClock(), receiver, "a", limits)

    # Others went through (msg 3) since msg 1 first failed: at its next failure it goes aside.
    assert await deliverer.deliver_once()
    assert [m["msg_id"] for m in receiver.taken] == [3]
    receiver.refusals = 1
    deliverer._backoff["users:1:2"].due = 0.0
    await deliver_all(deliverer, uow)
    assert [m["msg_id"] for m in receiver.taken] == [3, 2]
    dead = await list_dead(uow)
    assert [orjson.loads(d.body)["msg_id"] for d in dead] == [1]
    assert dead[0].reason.startswith("failed for 0.0 h while others went through")


def test_the_body_carries_the_event_id_its_type_and_fields_and_the_signature_verifies() -> None:
    alice = User(7, "alice")
    bodies = {
        "direct": encode_event("e1", chat(3, 7, 8)),
        "account_created": encode_event("e2", AccountCreated(alice)),
        "friend_requested": encode_event("e3", FriendRequested(7, 8)),
        "group_founded": encode_event("e4", GroupFounded(5, 7, "g")),
    }
    assert orjson.loads(bodies["direct"]) == {
        "event_id": "e1",
        "type": "direct",
        "data": {
            "msg_id": 3,
            "sender_id": 7,
            "sender_name": "u7",
            "recipient_id": 8,
            "text": "hi",
            "sent_at_ms": 0,
            "file": None,  # a chat's attached file (PROTOCOL.md "Files"), null without one
        },
    }
    assert orjson.loads(bodies["account_created"])["data"] == {"user_id": 7, "name": "alice"}
    assert orjson.loads(bodies["friend_requested"])["data"] == {"user_id": 7, "friend_id": 8}
    assert orjson.loads(bodies["group_founded"])["data"] == {
        "group_id": 5,
        "creator_id": 7,
        "name": "g",
    }
    body = bodies["direct"].encode()
    signature = sign("secret", body)
    assert chatserver.verify_webhook("secret", body, signature)
    assert not chatserver.verify_webhook("other secret", body, signature)
    assert not chatserver.verify_webhook("secret", body + b" ", signature)
    assert conversation_of(chat(1, 9, 2)) == conversation_of(chat(2, 2, 9)) == "users:2:9"
