import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


from collections.abc import AsyncIterator  # noqa: E402

from chatserver.adapters.security import ScryptHasher  # noqa: E402
from chatserver.entrypoints.bootstrap import ChatApp, Config, bootstrap  # noqa: E402

# scrypt at its smallest cost: the same code path as production, at test speed.
FAST_HASHER = ScryptHasher(n=2, r=1, p=1)


@pytest.fixture
async def chat() -> AsyncIterator[ChatApp]:
    """A node on in-memory adapters, as a program embedding the chat would build it."""
    async with bootstrap(Config(database="memory://", node_id="test"), hasher=FAST_HASHER) as app:
        yield app
