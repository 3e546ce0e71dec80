"""The cross-node cases of tests/unit/test_cluster.py, on the Redis bus and presence."""

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatserver.adapters.redis.bus import RedisBus
from chatserver.domain.messages import DirectMessage
from chatserver.entrypoints.bootstrap import ChatApp, bootstrap
from tests.unit.conftest import FAST_HASHER
from tests.unit.test_cluster import (  # noqa: F401  (collected here, run on Redis)
    config,
    online,
    register,
    stranger_limited_nodes,
    strangers_spread_over_two_nodes,
    test_a_block_reaches_the_blocked_users_sessions_on_another_node,
    test_a_group_messages_copies_for_one_node_travel_as_one,
    test_a_login_on_another_node_kicks_the_older_session,
    test_a_message_follows_a_user_who_moved_since_the_sender_looked,
    test_a_notice_follows_a_user_who_moved,
    test_a_password_change_ends_the_users_sessions_on_another_node,
    test_chat_crosses_nodes,
    test_friend_removed_reaches_every_device_on_both_nodes,
    test_group_membership_changes_reach_other_nodes,
    test_messages_for_a_user_who_left_the_other_node_are_stored_there,
    test_presence_and_friend_answers_cross_nodes,
    test_two_sessions_ending_at_once_on_two_nodes_still_say_offline,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[ChatApp, ChatApp]]:
    bus = f"{REDIS}?namespace=test-{secrets.token_hex(4)}"
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    async with (
        bootstrap(config(url, "a", bus), hasher=FAST_HASHER) as a,
        bootstrap(config(url, "b", bus), hasher=FAST_HASHER) as b,
    ):
        yield a, b


@pytest.fixture
async def three_nodes(tmp_path: Path) -> AsyncIterator[tuple[ChatApp, ChatApp, ChatApp]]:
    bus = f"{REDIS}?namespace=test-{secrets.token_hex(4)}"
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    async with (
        bootstrap(config(url, "a", bus), hasher=FAST_HASHER) as a,
        bootstrap(config(url, "b", bus), hasher=FAST_HASHER) as b,
        bootstrap(config(url, "c", bus), hasher=FAST_HASHER) as c,
    ):
        yield a, b, c


@pytest.fixture
def kill() -> Callable[[ChatApp], None]:
    pytest.skip("killing a node on Redis is tested with real processes")


async def test_what_is_sent_meanwhile_goes_to_redis_in_one_batch_in_order(
    nodes: tuple[ChatApp, ChatApp],
) -> None:
    """200 deliveries handed to the bus at once cost a few round trips, not 200, and reach
    the other node in the order they were handed over."""
    a, b = nodes
    bob = await register(a, "bob")
    cb = await online(b, bob)
    bus = a.node.bus
    assert isinstance(bus, RedisBus)
    batches = 0
    send = bus._send

    async def counted(batch: Any) -> None:
        nonlocal batches
        batches += 1
        await send(batch)

    bus._send = counted  # type: ignore[method-assign]
    messages = [
        DirectMessage(n, 1, "alice", bob, f"number {n}", 0) for n in range(1_000_000, 1_000_200)
    ]
    heard = []

    async def hand_over(message: DirectMessage) -> None:
        heard.append(await bus.deliver(b.node.node_id, [bob], message))

    async with anyio.create_task_group() as tg:
        for message in messages:
            tg.start_soon(hand_over, message)
    assert heard == [True] * 200
    assert 1 <= batches <= 5
    with anyio.fail_after(5):
        got = [await cb.next_event() for _ in messages]
    assert [e.msg_id for e in got if isinstance(e, DirectMessage)] == [
        m.msg_id for m in messages
    ]


async def test_strangers_spread_over_two_nodes_get_the_clusters_rate_over_redis(
    tmp_path: Path,
) -> None:
    """Each node counts the nodes on the bus (PUBSUB NUMSUB of the broadcast channel, at the
    lease's pace) and enforces its share of the strangers' rate."""
    bus = f"{REDIS}?namespace=test-{secrets.token_hex(4)}"
    async with stranger_limited_nodes(f"sqlite:///{tmp_path / 'cluster.db'}", bus) as (a, b):
        await strangers_spread_over_two_nodes(a, b)
