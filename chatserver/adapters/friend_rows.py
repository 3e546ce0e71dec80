"""The friend, friend request, block and decline rows in SQL, one implementation for SQLite and
MySQL/MariaDB (as file_rows.py is for files): each statement is written once, with %s
placeholders, and a Dialect says what differs: the placeholder, how an INSERT leaves a row
whose key exists alone or updates it, and which errors mean a broken constraint."""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from attrs import field, frozen

from chatserver.domain.errors import ChatError, UnknownUser
from chatserver.domain.users import User


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


class SqlFriendRepository:
    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._db = cursor
        self._dialect = dialect

    def _run(self, statement: str, params: Sequence[Any]) -> None:
        self._db.execute(self._dialect.sql(statement), params)

    def _exists(self, statement: str, params: Sequence[Any]) -> bool:
        self._run(statement, params)
        return self._db.fetchone() is not None

    def _users(self, statement: str, params: Sequence[Any]) -> list[User]:
        self._run(statement, params)
        return [User(int(user_id), str(name)) for user_id, name in self._db.fetchall()]

    def _ids(self, statement: str, params: Sequence[Any]) -> list[int]:
        self._run(statement, params)
        return [int(row[0]) for row in self._db.fetchall()]

    def friends_of(self, user_id: int) -> list[User]:
        return self._users(
            "SELECT u.id, u.name FROM friend f JOIN user u ON u.id = f.friendid"
            " WHERE f.userid = %s ORDER BY u.id",
            (user_id,),
        )

    def are_friends(self, a: int, b: int) -> bool:
        return self._exists("SELECT 1 FROM friend WHERE userid = %s AND friendid = %s", (a, b))

    def befriend(self, a: int, b: int) -> None:
        low, high = sorted((a, b))  # one order for every writer: fewer deadlocks
        with self._dialect.foreign_key(UnknownUser):
            self._run(
                "INSERT INTO friend (userid, friendid) VALUES (%s, %s), (%s, %s)"
                + self._dialect.keep_existing.format(column="userid"),
                (low, high, high, low),
            )

    def unfriend(self, a: int, b: int) -> None:
        self._run(
            "DELETE FROM friend"
            " WHERE (userid = %s AND friendid = %s) OR (userid = %s AND friendid = %s)",
            (a, b, b, a),
        )

    def add_request(self, requester_id: int, addressee_id: int) -> None:
        with self._dialect.foreign_key(UnknownUser):
            self._run(
                "INSERT INTO friend_request (requester, addressee) VALUES (%s, %s)"
                + self._dialect.keep_existing.format(column="requester"),
                (requester_id, addressee_id),
            )

    def has_request(self, requester_id: int, addressee_id: int) -> bool:
        return self._exists(
            "SELECT 1 FROM friend_request WHERE requester = %s AND addressee = %s",
            (requester_id, addressee_id),
        )

    def remove_request(self, requester_id: int, addressee_id: int) -> bool:
        self._run(
            "DELETE FROM friend_request WHERE requester = %s AND addressee = %s",
            (requester_id, addressee_id),
        )
        return self._db.rowcount > 0

    def requesters_of(self, addressee_id: int) -> list[User]:
        return self._users(
            "SELECT u.id, u.name FROM friend_request r JOIN user u ON u.id = r.requester"
            " WHERE r.addressee = %s ORDER BY r.seq",
            (addressee_id,),
        )

    def block(self, blocker_id: int, blocked_id: int) -> bool:
        # Asked first: what an INSERT that keeps an existing row counts differs by database.
        if self.is_blocked(blocker_id, blocked_id):
            return False
        with self._dialect.foreign_key(UnknownUser):
            self._run(
                "INSERT INTO userblock (blocker, blocked) VALUES (%s, %s)"
                + self._dialect.keep_existing.format(column="blocker"),
                (blocker_id, blocked_id),
            )
        return True

    def unblock(self, blocker_id: int, blocked_id: int) -> bool:
        self._run(
            "DELETE FROM userblock WHERE blocker = %s AND blocked = %s", (blocker_id, blocked_id)
        )
        return self._db.rowcount > 0

    def is_blocked(self, blocker_id: int, blocked_id: int) -> bool:
        return self._exists(
            "SELECT 1 FROM userblock WHERE blocker = %s AND blocked = %s", (blocker_id, blocked_id)
        )

    def blocked_by(self, blocker_id: int) -> list[int]:
        return self._ids(
            "SELECT blocked FROM userblock WHERE blocker = %s ORDER BY blocked", (blocker_id,)
        )

    def blockers_of(self, blocked_id: int) -> list[int]:
        return self._ids(
            "SELECT blocker FROM userblock WHERE blocked = %s ORDER BY blocker", (blocked_id,)
        )

    def declined_at(self, requester_id: int, addressee_id: int) -> int | None:
        self._run(
            "SELECT declined_ms FROM friend_decline WHERE requester = %s AND addressee = %s",
            (requester_id, addressee_id),
        )
        row = self._db.fetchone()
        return None if row is None else int(row[0])

    def note_decline(
        self, requester_id: int, addressee_id: int, at_ms: int, *, forget_before_ms: int
    ) -> None:
        self._run("DELETE FROM friend_decline WHERE declined_ms < %s", (forget_before_ms,))
        with self._dialect.foreign_key(UnknownUser):
            self._run(
                "INSERT INTO friend_decline (requester, addressee, declined_ms) VALUES (%s, %s, %s)"
                + self._dialect.update_existing.format(key="requester, addressee",
                                                       column="declined_ms"),
                (requester_id, addressee_id, at_ms),
            )

    def forget_declines(self, a: int, b: int) -> None:
        self._run(
            "DELETE FROM friend_decline"
            " WHERE (requester = %s AND addressee = %s) OR (requester = %s AND addressee = %s)",
            (a, b, b, a),
        )
