"""The cross-node cases of tests/unit/test_cluster.py, on the Redis bus and presence."""

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatserver.entrypoints.bootstrap import ChatApp, bootstrap
from tests.unit.conftest import FAST_HASHER
from tests.unit.test_cluster import (  # noqa: F401  (collected here, run on Redis)
    config,
    test_a_login_on_another_node_kicks_the_older_session,
    test_chat_crosses_nodes,
    test_group_membership_changes_reach_other_nodes,
    test_messages_for_a_user_who_left_the_other_node_are_stored_there,
    test_presence_and_friend_answers_cross_nodes,
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
def kill() -> Callable[[ChatApp], None]:
    pytest.skip("killing a node on Redis is tested with real processes")
