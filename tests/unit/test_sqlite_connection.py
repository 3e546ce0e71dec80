"""How chatserver opens a SQLite database: WAL, and checkpoints that batches can share."""

from pathlib import Path

from chatserver.adapters.sqlite.schema import WAL_AUTOCHECKPOINT_PAGES, connect


def test_a_connection_uses_the_wal_and_checkpoints_only_after_many_pages(
    tmp_path: Path,
) -> None:
    connection = connect(tmp_path / "chat.db")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        pages = connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert pages == WAL_AUTOCHECKPOINT_PAGES > 1000  # SQLite's default is 1,000
    finally:
        connection.close()
