"""A node's Redis calls beyond its pool's connections wait for one instead of failing."""

import anyio
import pytest

from chatserver.adapters.redis.connection import POOL_SIZE, open_redis

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_more_calls_at_once_than_the_pool_has_connections_all_succeed() -> None:
    client = open_redis("redis://127.0.0.1:6379/0")
    answers: list[object] = []

    async def call() -> None:
        # BLPOP on an empty key holds its connection for a while, as a slow call would.
        answers.append(await client.execute_command("BLPOP", "test-pool-never-filled", 0.05))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3 * POOL_SIZE):
                tg.start_soon(call)
    finally:
        await client.aclose()
    assert answers == [None] * (3 * POOL_SIZE)
