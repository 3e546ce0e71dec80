"""The webhook's dead letters in SQL, one implementation for SQLite and MySQL/MariaDB
(sql_dialect.py says how): the rows of webhook_outbox set aside in webhook_dead."""

from collections.abc import Collection

from chatserver.adapters.sql_dialect import SqlRows
from chatserver.domain.ports import DeadWebhook, WebhookRow

CHUNK = 1_000  # ids per statement


class SqlDeadLetters(SqlRows):
    """WebhookOutbox's dead-letter half; the adapters' outboxes add the rest."""

    def bury(self, row: WebhookRow, now_ms: int, reason: str) -> None:
        self._run("DELETE FROM webhook_outbox WHERE id = %s", (row.id,))
        self._run(
            "INSERT INTO webhook_dead (id, conversation, body, created_ms, died_ms, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (row.id, row.conversation, row.body, row.created_ms, now_ms, reason[:255]),
        )

    def dead(self, limit: int, after_id: int = 0) -> list[DeadWebhook]:
        rows = self._rows(
            "SELECT id, conversation, body, created_ms, died_ms, reason FROM webhook_dead"
            " WHERE id > %s ORDER BY id LIMIT %s",
            (after_id, limit),
        )
        return [
            DeadWebhook(int(i), str(c), str(b), int(ms), int(died), str(why))
            for i, c, b, ms, died, why in rows
        ]

    def dead_count(self) -> int:
        return int(self._rows("SELECT count(*) FROM webhook_dead")[0][0])

    def revive(self, ids: Collection[int] | None) -> int:
        return self._move_dead(ids, revive=True)

    def drop_dead(self, ids: Collection[int] | None) -> int:
        return self._move_dead(ids, revive=False)

    def _move_dead(self, ids: Collection[int] | None, *, revive: bool) -> int:
        listed = None if ids is None else sorted(ids)
        chunks: list[list[int] | None] = [None] if listed is None else [
            listed[start : start + CHUNK] for start in range(0, len(listed), CHUNK)
        ]
        moved = 0
        for chunk in chunks:
            where = "" if chunk is None else f"WHERE id IN ({', '.join(['%s'] * len(chunk))})"
            values = () if chunk is None else tuple(chunk)
            if revive:
                self._run(
                    "INSERT INTO webhook_outbox (conversation, body, created_ms)"
                    f" SELECT conversation, body, created_ms FROM webhook_dead {where}"
                    " ORDER BY id",
                    values,
                )
            self._run(f"DELETE FROM webhook_dead {where}", values)
            moved += self._db.rowcount
        return moved
