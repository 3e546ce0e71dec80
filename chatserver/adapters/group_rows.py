"""The group rows in SQL that SQLite and MySQL/MariaDB share (sql_dialect.py says how); each
adapter's GroupRepository adds what its schema does its own way: new ids, mutes, roles."""

from collections.abc import Sequence
from typing import Any

from chatserver.adapters.sql_dialect import SqlRows
from chatserver.domain.errors import NameTaken, UnknownGroup, UnknownUser
from chatserver.domain.groups import Group, Role
from chatserver.domain.names import NamedId, name_key


class SqlGroupRows(SqlRows):
    def _groups(self, statement: str, params: Sequence[Any]) -> list[Group]:
        return [Group(int(group_id), str(name), str(description))
                for group_id, name, description in self._rows(statement, params)]

    def get(self, group_id: int) -> Group | None:
        groups = self._groups(
            "SELECT id, groupname, groupdesc FROM allgroup WHERE id = %s", (group_id,)
        )
        return groups[0] if groups else None

    def add_member(self, group_id: int, user_id: int, role: Role) -> bool:
        if self.get(group_id) is None:
            raise UnknownGroup()
        with self._dialect.foreign_key(UnknownUser):
            # A row left as it was counts 0: "already a member".
            self._run(
                "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (%s, %s, %s)"
                + self._dialect.keep_existing.format(column="groupid"),
                (group_id, user_id, role.value),
            )
        return self._db.rowcount > 0

    def remove_member(self, group_id: int, user_id: int) -> bool:
        self._run("DELETE FROM groupuser WHERE groupid = %s AND userid = %s", (group_id, user_id))
        return self._db.rowcount > 0

    def update(self, group_id: int, name: str | None, description: str | None) -> Group:
        with self._dialect.constraints_as(unique=NameTaken):
            if name is not None:
                self._run("DELETE FROM group_name_key WHERE groupid = %s", (group_id,))
                self._run(
                    "INSERT INTO group_name_key (name_key, groupid)"
                    " SELECT %s, id FROM allgroup WHERE id = %s",
                    (name_key(name), group_id),
                )
            self._run(
                "UPDATE allgroup SET groupname = coalesce(%s, groupname),"
                " groupdesc = coalesce(%s, groupdesc) WHERE id = %s",
                (name, description, group_id),
            )
        group = self.get(group_id)
        if group is None:
            raise UnknownGroup()
        return group

    def all(self, after_id: int, limit: int) -> list[Group]:
        return self._groups(
            "SELECT id, groupname, groupdesc FROM allgroup WHERE id > %s ORDER BY id LIMIT %s",
            (after_id, limit),
        )

    def groups_of(self, user_id: int) -> list[Group]:
        return self._groups(
            "SELECT a.id, a.groupname, a.groupdesc FROM groupuser g JOIN allgroup a"
            " ON a.id = g.groupid WHERE g.userid = %s ORDER BY a.id",
            (user_id,),
        )

    def names(self) -> list[NamedId]:
        rows = self._rows(
            "SELECT a.id, a.groupname, k.name_key IS NOT NULL FROM allgroup a"
            " LEFT JOIN group_name_key k ON k.groupid = a.id ORDER BY a.id"
        )
        return [NamedId(int(row_id), str(name), bool(keyed)) for row_id, name, keyed in rows]
