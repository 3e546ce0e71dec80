"""Every adapter the contract suite runs against; a new adapter is one more entry in OPENERS.

An opener takes a directory that the test owns and opens the store that belongs to it;
opening the same directory again reopens the same data, for adapters that keep data at all.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path

from anyio import to_thread

from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.mysql.unit_of_work import open_mysql
from chatserver.adapters.sqlite.unit_of_work import open_sqlite
from chatserver.domain.ports import UnitOfWork

from .mysql_server import MYSQL

Opener = Callable[[Path], Awaitable[UnitOfWork]]
NewUnitOfWork = Callable[[], Awaitable[UnitOfWork]]


async def open_memory(directory: Path) -> UnitOfWork:
    return MemoryUnitOfWork()


async def open_sqlite_file(directory: Path) -> UnitOfWork:
    return await open_sqlite(directory / "chat.sqlite3")


async def open_mysql_database(directory: Path) -> UnitOfWork:
    """One database serves the whole run; a directory seen for the first time empties it."""
    url = await to_thread.run_sync(MYSQL.shared_database)
    uow = await open_mysql(url)
    marker = directory / "mysql-store"
    if not marker.exists():
        await to_thread.run_sync(MYSQL.empty_shared)
        marker.touch()
    return uow


OPENERS: dict[str, Opener] = {
    "memory": open_memory,
    "sqlite": open_sqlite_file,
    "mysql": open_mysql_database,
}

# The adapters whose data outlive their unit of work.
PERSISTENT = ["sqlite", "mysql"]
