"""Fixtures giving each contract test fresh units of work, once per adapter."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatserver.domain.ports import UnitOfWork

from .adapters import OPENERS, PERSISTENT, NewUnitOfWork, Opener


@pytest.fixture(params=list(OPENERS))
def opener(request: pytest.FixtureRequest) -> Opener:
    return OPENERS[request.param]


@pytest.fixture(params=PERSISTENT)
def persistent_opener(request: pytest.FixtureRequest) -> Opener:
    return OPENERS[request.param]


@pytest.fixture
async def uow(opener: Opener, tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    uow = await opener(tmp_path)
    yield uow
    await uow.aclose()


@pytest.fixture
async def new_uow(opener: Opener, tmp_path: Path) -> AsyncIterator[NewUnitOfWork]:
    """Opens an empty unit of work on every call: one for each hypothesis example."""
    opened: list[UnitOfWork] = []

    async def new() -> UnitOfWork:
        directory = tmp_path / str(len(opened))
        directory.mkdir()
        opened.append(await opener(directory))
        return opened[-1]

    yield new
    for uow in opened:
        await uow.aclose()
