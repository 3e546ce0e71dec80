"""Every adapter the contract suite runs against; a new adapter is one more entry in OPENERS.

An opener takes a directory that the test owns and opens the store that belongs to it;
opening the same directory again reopens the same data, for adapters that keep data at all.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path

from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.sqlite.unit_of_work import open_sqlite
from chatserver.domain.ports import UnitOfWork

Opener = Callable[[Path], Awaitable[UnitOfWork]]
NewUnitOfWork = Callable[[], Awaitable[UnitOfWork]]


async def open_memory(directory: Path) -> UnitOfWork:
    return MemoryUnitOfWork()


async def open_sqlite_file(directory: Path) -> UnitOfWork:
    return await open_sqlite(directory / "chat.sqlite3")


OPENERS: dict[str, Opener] = {"memory": open_memory, "sqlite": open_sqlite_file}

# The adapters whose data outlive their unit of work.
PERSISTENT = ["sqlite"]
