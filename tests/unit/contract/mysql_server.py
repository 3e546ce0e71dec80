"""The MariaDB the tests run against: fresh databases made for this run, dropped at its end.

The server is CHATSERVER_TEST_MYSQL (default mysql://root@127.0.0.1:3306). When it cannot be
reached, MySQL tests are skipped, or fail when the environment variable CI is set.
"""

import atexit
import os
import re
import secrets
import threading
import time
from typing import Any

import mysql.connector
import pytest

SERVER_URL = os.environ.get("CHATSERVER_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
PREFIX = "chatserver_test_"
STALE_SECONDS = 3 * 3600  # databases left behind by killed runs (CI runs stop at 90 min)
TABLES_CHILDREN_FIRST = (
    "chat_file_ref", "chat_file", "webhook_dead", "webhook_outbox", "inbox_device", "inbox",
    "inbox_message", "inbox_head", "friend_decline", "userblock", "friend_request", "friend",
    "groupuser", "group_name_key", "allgroup", "user_name_key", "user"
)


class MySqlTestServer:
    def __init__(self, server_url: str) -> None:
        self.server_url = server_url.rstrip("/")
        self._lock = threading.Lock()
        self._admin: Any = None
        self._unreachable: str | None = None
        self._created: list[str] = []
        self._shared: str | None = None

    def new_database(self) -> str:
        """The URL of a new, empty database that is dropped when the run ends."""
        with self._lock:
            admin = self._connect()
            name = f"{PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
            admin.cursor().execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
            self._created.append(name)
            return f"{self.server_url}/{name}"

    def shared_database(self) -> str:
        """One database for the contract suite, emptied by empty_shared() between stores."""
        if self._shared is None:
            self._shared = self.new_database()
        return self._shared

    def empty_shared(self) -> None:
        """Delete every row of the shared database and restart its sequences."""
        assert self._shared is not None, "call shared_database() first"
        with self._lock:
            cursor = self._connect().cursor()
            cursor.execute(f"USE `{self._shared.rsplit('/', 1)[1]}`")
            for table in TABLES_CHILDREN_FIRST:
                cursor.execute(f"DELETE FROM `{table}`")
            cursor.execute("UPDATE id_sequence SET next = 1")
            cursor.execute("UPDATE message_id_sequence SET next = 1")
            cursor.execute("UPDATE webhook_lease SET owner = '', until_ms = 0")
            self._admin.commit()

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the admin connection (autocommitted); return its rows."""
        with self._lock:
            cursor = self._connect().cursor()
            cursor.execute(statement, params)
            rows = cursor.fetchall() if cursor.with_rows else []
            self._admin.commit()
            return rows

    def drop_all(self) -> None:
        with self._lock:
            if self._admin is None:
                return
            cursor = self._admin.cursor()
            for name in self._created:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            self._created.clear()
            self._admin.close()
            self._admin = None

    def _connect(self) -> Any:
        if self._admin is not None:
            return self._admin
        if self._unreachable is not None:
            self._give_up(self._unreachable)
        match = re.fullmatch(
            r"mysql://([^:@/]+)(?::([^@/]*))?@([^:/]+)(?::(\d+))?", self.server_url
        )
        assert match, "CHATSERVER_TEST_MYSQL must be mysql://user[:password]@host[:port]"
        user, password, host, port = match.groups()
        try:
            self._admin = mysql.connector.connect(
                user=user, password=password or "", host=host, port=int(port or 3306),
                charset="utf8mb4", connection_timeout=3, buffered=True,
            )
        except mysql.connector.Error as error:
            self._unreachable = f"MariaDB at {host}:{port or 3306} is unreachable: {error}"
            self._give_up(self._unreachable)
        atexit.register(self.drop_all)
        self._drop_stale()
        return self._admin

    def _drop_stale(self) -> None:
        cursor = self._admin.cursor()
        cursor.execute("SHOW DATABASES LIKE %s", (PREFIX.replace("_", r"\_") + "%",))
        for (name,) in cursor.fetchall():
            stamp = re.fullmatch(rf"{PREFIX}(\d+)_[0-9a-f]+", name)
            if stamp and int(stamp[1]) < time.time() - STALE_SECONDS:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")

    @staticmethod
    def _give_up(reason: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


MYSQL = MySqlTestServer(SERVER_URL)
