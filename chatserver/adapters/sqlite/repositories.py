"""SQLite repositories: plain synchronous SQL, run by the unit of work inside one transaction."""

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from chatserver.adapters.serialization import dump_delivery, load_delivery
from chatserver.domain.errors import ChatError, NameTaken, UnknownGroup, UnknownUser
from chatserver.domain.groups import Group, Member, Role
from chatserver.domain.messages import Delivery
from chatserver.domain.users import Account, User


@contextmanager
def constraints_as(
    *, unique: type[ChatError] | None = None, foreign_key: type[ChatError] | None = None
) -> Iterator[None]:
    """Turn a broken UNIQUE or FOREIGN KEY constraint into the domain error that explains it."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        if unique and error.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE":
            raise unique() from error
        if foreign_key and error.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            raise foreign_key() from error
        raise


class SqliteUserRepository:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def add(self, name: str, password_hash: str) -> User:
        with constraints_as(unique=NameTaken):
            cursor = self._db.execute(
                "INSERT INTO user (name, password) VALUES (?, ?)", (name, password_hash)
            )
        assert cursor.lastrowid is not None
        return User(cursor.lastrowid, name)

    def get(self, user_id: int) -> User | None:
        row = self._db.execute("SELECT id, name FROM user WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else User(*row)

    def account(self, user_id: int) -> Account | None:
        row = self._db.execute(
            "SELECT id, name, password FROM user WHERE id = ?", (user_id,)
        ).fetchone()
        return None if row is None else Account(User(row[0], row[1]), row[2])

    def account_by_name(self, name: str) -> Account | None:
        row = self._db.execute(
            "SELECT id, name, password FROM user WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else Account(User(row[0], row[1]), row[2])


class SqliteFriendRepository:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def friends_of(self, user_id: int) -> list[User]:
        rows = self._db.execute(
            "SELECT u.id, u.name FROM friend f JOIN user u ON u.id = f.friendid"
            " WHERE f.userid = ? ORDER BY u.id",
            (user_id,),
        )
        return [User(*row) for row in rows]

    def are_friends(self, a: int, b: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM friend WHERE userid = ? AND friendid = ?", (a, b)
        ).fetchone()
        return row is not None

    def befriend(self, a: int, b: int) -> None:
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute(
                "INSERT INTO friend (userid, friendid) VALUES (?, ?), (?, ?)"
                " ON CONFLICT DO NOTHING",
                (a, b, b, a),
            )

    def unfriend(self, a: int, b: int) -> None:
        self._db.execute(
            "DELETE FROM friend"
            " WHERE (userid = ? AND friendid = ?) OR (userid = ? AND friendid = ?)",
            (a, b, b, a),
        )

    def add_request(self, requester_id: int, addressee_id: int) -> None:
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute(
                "INSERT INTO friend_request (requester, addressee) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (requester_id, addressee_id),
            )

    def has_request(self, requester_id: int, addressee_id: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM friend_request WHERE requester = ? AND addressee = ?",
            (requester_id, addressee_id),
        ).fetchone()
        return row is not None

    def remove_request(self, requester_id: int, addressee_id: int) -> bool:
        cursor = self._db.execute(
            "DELETE FROM friend_request WHERE requester = ? AND addressee = ?",
            (requester_id, addressee_id),
        )
        return cursor.rowcount > 0

    def requesters_of(self, addressee_id: int) -> list[User]:
        rows = self._db.execute(
            "SELECT u.id, u.name FROM friend_request r JOIN user u ON u.id = r.requester"
            " WHERE r.addressee = ? ORDER BY r.seq",
            (addressee_id,),
        )
        return [User(*row) for row in rows]


class SqliteGroupRepository:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def create(self, name: str, description: str, creator_id: int) -> Group:
        # Checked first, so that a failure leaves no group without its creator.
        if self._db.execute("SELECT 1 FROM user WHERE id = ?", (creator_id,)).fetchone() is None:
            raise UnknownUser()
        with constraints_as(unique=NameTaken):
            cursor = self._db.execute(
                "INSERT INTO allgroup (groupname, groupdesc) VALUES (?, ?)", (name, description)
            )
        assert cursor.lastrowid is not None
        group = Group(cursor.lastrowid, name, description)
        self.add_member(group.id, creator_id, Role.CREATOR)
        return group

    def get(self, group_id: int) -> Group | None:
        row = self._db.execute(
            "SELECT id, groupname, groupdesc FROM allgroup WHERE id = ?", (group_id,)
        ).fetchone()
        return None if row is None else Group(*row)

    def add_member(self, group_id: int, user_id: int, role: Role) -> bool:
        if self.get(group_id) is None:
            raise UnknownGroup()
        with constraints_as(foreign_key=UnknownUser):
            cursor = self._db.execute(
                "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (group_id, user_id, role.value),
            )
        return cursor.rowcount > 0

    def remove_member(self, group_id: int, user_id: int) -> bool:
        cursor = self._db.execute(
            "DELETE FROM groupuser WHERE groupid = ? AND userid = ?", (group_id, user_id)
        )
        return cursor.rowcount > 0

    def members(self, group_id: int) -> list[Member]:
        rows = self._db.execute(
            "SELECT u.id, u.name, g.grouprole FROM groupuser g JOIN user u ON u.id = g.userid"
            " WHERE g.groupid = ? ORDER BY g.seq",
            (group_id,),
        )
        return [Member(User(user_id, name), Role(role)) for user_id, name, role in rows]

    def groups_of(self, user_id: int) -> list[Group]:
        rows = self._db.execute(
            "SELECT a.id, a.groupname, a.groupdesc FROM groupuser g JOIN allgroup a"
            " ON a.id = g.groupid WHERE g.userid = ? ORDER BY a.id",
            (user_id,),
        )
        return [Group(*row) for row in rows]


class SqliteMessageStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def store(self, user_id: int, delivery: Delivery) -> None:
        kind, body = dump_delivery(delivery)
        with constraints_as(foreign_key=UnknownUser):
            self._db.execute(
                "INSERT INTO offlinemessage (userid, msg_id, kind, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (user_id, delivery.msg_id, kind, body),
            )

    def waiting(self, user_id: int) -> list[Delivery]:
        rows = self._db.execute(
            "SELECT kind, body FROM offlinemessage WHERE userid = ? ORDER BY seq", (user_id,)
        )
        return [load_delivery(kind, body) for kind, body in rows]

    def delete(self, user_id: int, msg_ids: Iterable[int]) -> None:
        self._db.executemany(
            "DELETE FROM offlinemessage WHERE userid = ? AND msg_id = ?",
            ((user_id, msg_id) for msg_id in msg_ids),
        )

    def count(self, user_id: int) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM offlinemessage WHERE userid = ?", (user_id,)
        ).fetchone()
        count: int = row[0]
        return count


class SqliteMessageIdSequence:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def reserve(self, count: int) -> int:
        if count < 0:
            raise ValueError("cannot reserve a negative number of message ids")
        # fetchall finishes the statement, which must not be left running at COMMIT.
        rows = self._db.execute(
            "UPDATE message_id_sequence SET next = next + ? RETURNING next - ?", (count, count)
        ).fetchall()
        first: int = rows[0][0]
        return first
