"""The file rows of PROTOCOL.md Version 2 "Files" in SQL, one implementation for SQLite and
MySQL/MariaDB: the statements are plain enough for both (%s placeholders, no RETURNING)."""

from collections.abc import Callable, Sequence
from typing import Any

from chatserver.domain.files import StoredFile

# Runs one statement and returns its rows (none for a write); lastrowid after an INSERT.
Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

COLUMNS = "id, owner, name, size, mime, created_ms, sha256"


class SqlFileRepository:
    def __init__(self, execute: Execute, last_id: Callable[[], int]) -> None:
        self._execute = execute
        self._last_id = last_id

    def add(self, owner_id: int, name: str, size: int, mime: str, now_ms: int) -> StoredFile:
        self._execute(
            "INSERT INTO chat_file (owner, name, size, mime, created_ms)"
            " VALUES (%s, %s, %s, %s, %s)",
            (owner_id, name, size, mime, now_ms),
        )
        return StoredFile(self._last_id(), owner_id, name, size, mime, now_ms)

    def get(self, file_id: int) -> StoredFile | None:
        rows = self._execute(f"SELECT {COLUMNS} FROM chat_file WHERE id = %s", (file_id,))
        return StoredFile(*rows[0]) if rows else None

    def complete(self, file_id: int, sha256: str) -> bool:
        if self.get(file_id) is None:
            return False
        self._execute("UPDATE chat_file SET sha256 = %s WHERE id = %s", (sha256, file_id))
        return True

    def uploaded_since(self, owner_id: int, since_ms: int) -> int:
        rows = self._execute(
            "SELECT COALESCE(SUM(size), 0) FROM chat_file WHERE owner = %s AND created_ms >= %s",
            (owner_id, since_ms),
        )
        return int(rows[0][0])

    def refer(self, file_id: int, msg_id: int, group_id: int | None,
              recipient_id: int | None, now_ms: int) -> None:
        self._execute(
            "INSERT INTO chat_file_ref (file_id, msg_id, groupid, userid, created_ms)"
            " VALUES (%s, %s, %s, %s, %s)",
            (file_id, msg_id, group_id, recipient_id, now_ms),
        )

    def readers(self, file_id: int) -> tuple[frozenset[int], frozenset[int]]:
        rows = self._execute(
            "SELECT userid, groupid FROM chat_file_ref WHERE file_id = %s", (file_id,)
        )
        return (frozenset(u for u, _ in rows if u is not None),
                frozenset(g for _, g in rows if g is not None))

    def collect(self, referred_before_ms: int, unsent_before_ms: int) -> list[str]:
        # References whose message has left every inbox (the history window, or everyone's
        # devices had it with a window of 0); made a while ago, so a message being stored
        # right now is not taken for gone.
        self._execute(
            "DELETE FROM chat_file_ref WHERE created_ms < %s AND NOT EXISTS"
            " (SELECT 1 FROM inbox_message m WHERE m.msg_id = chat_file_ref.msg_id)",
            (referred_before_ms,),
        )
        gone = self._execute(
            "SELECT id, sha256 FROM chat_file f WHERE created_ms < %s AND NOT EXISTS"
            " (SELECT 1 FROM chat_file_ref r WHERE r.file_id = f.id)",
            (unsent_before_ms,),
        )
        if not gone:
            return []
        ids = [file_id for file_id, _ in gone]
        self._execute(
            f"DELETE FROM chat_file WHERE id IN ({', '.join(['%s'] * len(ids))})", ids
        )
        unused = []
        for sha256 in {sha256 for _, sha256 in gone if sha256 is not None}:
            if not self._execute("SELECT 1 FROM chat_file WHERE sha256 = %s LIMIT 1", (sha256,)):
                unused.append(sha256)
        return unused
