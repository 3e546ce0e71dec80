"""What SQLite and MySQL/MariaDB say differently, for the repositories written once for both
(friend_rows.py, group_rows.py; file_rows.py for files): each statement is written once, with
%s placeholders, and a Dialect says what differs: the placeholder, how an INSERT leaves a row
whose key exists alone or updates it, and which errors mean a broken constraint."""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from attrs import field, frozen

from chatserver.domain.errors import ChatError


class Cursor(Protocol):
    """What both sqlite3.Cursor and mysql.connector's MySQLCursor offer."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


@frozen
class Dialect:
    """What a database says its own way.

    placeholder: "?" (SQLite) or "%s" (MySQL).
    keep_existing: the end of an INSERT that leaves a row whose key exists as it is (without
        swallowing a broken foreign key); {column} is one of the key's columns.
    update_existing: the end of an INSERT that updates {column} of a row whose key ({key})
        exists to the value inserted.
    constraints_as: a context manager that turns a broken FOREIGN KEY (foreign_key=...) into
        the domain error given.
    """

    placeholder: str
    keep_existing: str
    update_existing: str
    constraints_as: Callable[..., AbstractContextManager[None]]
    _statements: dict[str, str] = field(factory=dict, init=False, eq=False)

    def sql(self, statement: str) -> str:
        """The statement with this dialect's placeholders (rewritten once, then remembered)."""
        text = self._statements.get(statement)
        if text is None:
            text = self._statements[statement] = statement.replace("%s", self.placeholder)
        return text

    def foreign_key(self, error: type[ChatError]) -> AbstractContextManager[None]:
        return self.constraints_as(foreign_key=error)


class SqlRows:
    """The base of a repository written once: statements run on cursor in dialect's words."""

    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._db = cursor
        self._dialect = dialect

    def _run(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._db.execute(self._dialect.sql(statement), params)

    def _exists(self, statement: str, params: Sequence[Any]) -> bool:
        self._run(statement, params)
        return self._db.fetchone() is not None

    def _rows(self, statement: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        self._run(statement, params)
        return self._db.fetchall()
