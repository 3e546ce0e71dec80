"""The friend, friend request, block and decline rows in SQL, one implementation for SQLite and
MySQL/MariaDB (sql_dialect.py says how)."""

from collections.abc import Sequence
from typing import Any

from chatserver.adapters.sql_dialect import SqlRows
from chatserver.domain.errors import UnknownUser
from chatserver.domain.users import User


class SqlFriendRepository(SqlRows):
    def _users(self, statement: str, params: Sequence[Any]) -> list[User]:
        return [User(int(user_id), str(name)) for user_id, name in self._rows(statement, params)]

    def _ids(self, statement: str, params: Sequence[Any]) -> list[int]:
        return [int(row[0]) for row in self._rows(statement, params)]

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

    def requested_by(self, requester_id: int) -> list[int]:
        return self._ids(
            "SELECT addressee FROM friend_request WHERE requester = %s ORDER BY addressee",
            (requester_id,),
        )

    def declines_of(self, user_id: int) -> list[tuple[int, int, int]]:
        return [
            (int(requester), int(addressee), int(declined_ms))
            for requester, addressee, declined_ms in self._rows(
                "SELECT requester, addressee, declined_ms FROM friend_decline"
                " WHERE requester = %s OR addressee = %s ORDER BY requester, addressee",
                (user_id, user_id),
            )
        ]

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
