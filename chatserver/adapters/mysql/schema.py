"""The MySQL schema, as an ordered list of migrations, and how a database is brought up to date.

The `schema_version` table counts the migrations applied. To change the schema, append a step to
MIGRATIONS; never edit a step that has shipped. MySQL commits DDL at once, so every statement of
a step must be safe to run again (IF NOT EXISTS, INSERT IGNORE): a step cut short by a crash is
simply run again. Upgrades hold a named server lock, so several nodes may start at once.

The table names are the original C++ server's; the columns are what correctness needs: unique
pairs, a password hash, an order and a msg_id for stored deliveries, friend requests.
"""

from collections.abc import Callable
from typing import Any, cast

from mysql.connector import Error
from mysql.connector.abstracts import MySQLConnectionAbstract
from mysql.connector.cursor import MySQLCursor

from chatserver.adapters.mysql.url import quote_name
from chatserver.domain.errors import Unavailable
from chatserver.domain.names import name_key

# A step's statements; a callable among them is run with a cursor (what SQL cannot do) and must
# be safe to run again too.
Migration = tuple[str | Callable[[MySQLCursor], None], ...]

# Milliseconds since the Unix epoch, and an integer field of a JSON body, in SQL.
_NOW_MS = "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)"
_JSON_INT = "CAST(JSON_EXTRACT(body, '$.{field}') AS SIGNED)"

# Every table: InnoDB, utf8mb4, and a binary collation that pads nothing, so that names compare
# exactly: 'alice' and 'Alice' and 'alice ' are three names.
TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"

# The first of these the server knows is used: NO PAD on MariaDB, then MySQL 8, then PAD SPACE.
EXACT_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")

# Issue 16.10: a name's key is now its look-alike skeleton (Unicode TR 39) with case folded, so
# "ѕсоре" in Cyrillic takes the key of "scope". Every keyed name is keyed again, the earliest
# first; a later one that looks like an earlier one keeps working without its key (`chatserver
# db check-names` lists it). DML only: one transaction. A step of MIGRATIONS (named for
# tests/integration/test_name_migration.py).
REKEY_NAMES: Migration = (
    lambda cursor: rekey_names(cursor, "user", "name", "user_name_key", "userid"),
    lambda cursor: rekey_names(cursor, "allgroup", "groupname", "group_name_key", "groupid"),
)


MIGRATIONS: tuple[Migration, ...] = (
    (
        # Ids come from id_sequence, not AUTO_INCREMENT: InnoDB never gives back an
        # AUTO_INCREMENT value, even when the insert fails or rolls back.
        f"""CREATE TABLE IF NOT EXISTS user (
            id INT NOT NULL PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            password VARCHAR(255) NOT NULL,
            UNIQUE KEY user_name (name)
        ) {TABLE_OPTIONS}""",
        # Stored in both directions, as the original server did.
        f"""CREATE TABLE IF NOT EXISTS friend (
            userid INT NOT NULL,
            friendid INT NOT NULL,
            PRIMARY KEY (userid, friendid),
            KEY friend_by_friend (friendid),
            FOREIGN KEY (userid) REFERENCES user (id),
            FOREIGN KEY (friendid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS friend_request (
            seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            requester INT NOT NULL,
            addressee INT NOT NULL,
            UNIQUE KEY friend_request_pair (addressee, requester),
            KEY friend_request_by_requester (requester),
            FOREIGN KEY (requester) REFERENCES user (id),
            FOREIGN KEY (addressee) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS allgroup (
            id INT NOT NULL PRIMARY KEY,
            groupname VARCHAR(255) NOT NULL,
            groupdesc VARCHAR(255) NOT NULL DEFAULT '',
            UNIQUE KEY allgroup_name (groupname)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS groupuser (
            seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            groupid INT NOT NULL,
            userid INT NOT NULL,
            grouprole ENUM('creator', 'normal') NOT NULL,
            UNIQUE KEY groupuser_pair (groupid, userid),
            KEY groupuser_by_user (userid),
            FOREIGN KEY (groupid) REFERENCES allgroup (id),
            FOREIGN KEY (userid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        # seq orders a user's deliveries; the secondary key on userid carries seq with it.
        f"""CREATE TABLE IF NOT EXISTS offlinemessage (
            seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            userid INT NOT NULL,
            msg_id BIGINT NOT NULL,
            kind VARCHAR(16) NOT NULL,
            body MEDIUMTEXT NOT NULL,
            UNIQUE KEY offlinemessage_once (userid, msg_id),
            KEY offlinemessage_by_user (userid),
            FOREIGN KEY (userid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        # One row: the next message id to hand out.
        f"""CREATE TABLE IF NOT EXISTS message_id_sequence (
            id TINYINT NOT NULL PRIMARY KEY,
            next BIGINT NOT NULL
        ) {TABLE_OPTIONS}""",
        "INSERT IGNORE INTO message_id_sequence (id, next) VALUES (1, 1)",
        # The next id of each table whose ids users see.
        f"""CREATE TABLE IF NOT EXISTS id_sequence (
            tablename VARCHAR(64) NOT NULL PRIMARY KEY,
            next INT NOT NULL
        ) {TABLE_OPTIONS}""",
        "INSERT IGNORE INTO id_sequence (tablename, next) VALUES ('user', 1), ('allgroup', 1)",
    ),
    (
        # Version 2, the inbox (PROTOCOL.md "The inbox"): each message once, with the time it
        # was first kept, which is when each of its entries leaves the history window ...
        f"""CREATE TABLE IF NOT EXISTS inbox_message (
            msg_id BIGINT NOT NULL PRIMARY KEY,
            kind VARCHAR(16) NOT NULL,
            body MEDIUMTEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            KEY inbox_message_by_time (created_ms)
        ) {TABLE_OPTIONS}""",
        # ... each user's newest pos and what they have read: a storing transaction raises
        # last_pos, and the row lock orders the writers of several nodes ...
        f"""CREATE TABLE IF NOT EXISTS inbox_head (
            userid INT NOT NULL PRIMARY KEY,
            last_pos BIGINT NOT NULL DEFAULT 0,
            read_pos BIGINT NOT NULL DEFAULT 0,
            FOREIGN KEY (userid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        # ... and a small row per user and pos. conversation: adapters.inbox_keys (the peer's
        # id, minus the group's id, NULL for none). No foreign keys: the head row of each user
        # is written first in the same transaction, and checking them would cost every row.
        f"""CREATE TABLE IF NOT EXISTS inbox (
            userid INT NOT NULL,
            pos BIGINT NOT NULL,
            msg_id BIGINT NOT NULL,
            conversation BIGINT NULL,
            PRIMARY KEY (userid, pos),
            KEY inbox_by_conversation (userid, conversation, pos),
            KEY inbox_by_message (msg_id)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS inbox_device (
            userid INT NOT NULL,
            device VARCHAR(64) NOT NULL,
            pos BIGINT NOT NULL,
            beyond MEDIUMTEXT NOT NULL,
            PRIMARY KEY (userid, device),
            FOREIGN KEY (userid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        # What waited in version 1 becomes each user's inbox, in the order it was stored,
        # kept from now on. Committed with the new version, so a step cut short runs again.
        f"""INSERT IGNORE INTO inbox_message (msg_id, kind, body, created_ms)
            SELECT msg_id, kind, body, {_NOW_MS} FROM offlinemessage
            WHERE seq IN (SELECT min(seq) FROM offlinemessage GROUP BY msg_id)""",
        f"""INSERT IGNORE INTO inbox (userid, pos, msg_id, conversation)
            SELECT userid, row_number() OVER (PARTITION BY userid ORDER BY seq), msg_id,
                CASE kind
                    WHEN 'direct' THEN
                        CASE WHEN {_JSON_INT.format(field="sender_id")} = userid
                            THEN {_JSON_INT.format(field="recipient_id")}
                            ELSE {_JSON_INT.format(field="sender_id")} END
                    WHEN 'group' THEN -{_JSON_INT.format(field="group_id")}
                END
            FROM offlinemessage""",
        """INSERT IGNORE INTO inbox_head (userid, last_pos, read_pos)
            SELECT id, (SELECT count(*) FROM offlinemessage WHERE userid = user.id), 0
            FROM user""",
    ),
    (
        # Version 1's store of waiting deliveries: step 2 moved its rows into the inbox, and
        # nothing reads it any more.
        "DROP TABLE IF EXISTS offlinemessage",
    ),
    (
        # Version 2, groups that can be run: the admin role (MODIFY is safe to run again) ...
        """ALTER TABLE groupuser
            MODIFY grouprole ENUM('creator', 'admin', 'normal') NOT NULL""",
        # ... and mutes, one row per muted member (gone with the membership). A table rather
        # than a column: MySQL has no ADD COLUMN IF NOT EXISTS, and a step must be safe to run
        # again.
        f"""CREATE TABLE IF NOT EXISTS groupmute (
            groupid INT NOT NULL,
            userid INT NOT NULL,
            until_ms BIGINT NOT NULL,
            PRIMARY KEY (groupid, userid),
            FOREIGN KEY (groupid, userid) REFERENCES groupuser (groupid, userid)
                ON DELETE CASCADE
        ) {TABLE_OPTIONS}""",
    ),
    (
        # Version 2, people who can protect themselves: who blocks whom (BLOCK_MSG). Read by
        # blocker at login (LOGIN's `blocked`) and by blocked user (whose chats to them fail).
        f"""CREATE TABLE IF NOT EXISTS userblock (
            blocker INT NOT NULL,
            blocked INT NOT NULL,
            PRIMARY KEY (blocker, blocked),
            KEY userblock_by_blocked (blocked),
            FOREIGN KEY (blocker) REFERENCES user (id),
            FOREIGN KEY (blocked) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
    ),
    (
        # Version 2, an operator's suspension (ms since the epoch; NULL: not suspended) and a
        # deleted account's row, kept (deleted = 1, its name freed) so that what refers to its
        # id (others' kept messages, a write in flight) stays valid; it is never read as a user.
        # One statement: MySQL commits each DDL at once, and this one is all or nothing.
        "ALTER TABLE user ADD COLUMN suspended_until BIGINT NULL,"
        " ADD COLUMN deleted TINYINT NOT NULL DEFAULT 0",
    ),
    (
        # Durable webhooks: events written with the transaction that keeps them, delivered in
        # id order per conversation and deleted once the receiver took them ...
        f"""CREATE TABLE IF NOT EXISTS webhook_outbox (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            conversation VARCHAR(100) NOT NULL,
            body MEDIUMTEXT NOT NULL,
            created_ms BIGINT NOT NULL
        ) {TABLE_OPTIONS}""",
        # ... by one node at a time: the one whose lease lasts.
        f"""CREATE TABLE IF NOT EXISTS webhook_lease (
            name VARCHAR(20) NOT NULL PRIMARY KEY,
            owner VARCHAR(255) NOT NULL,
            until_ms BIGINT NOT NULL
        ) {TABLE_OPTIONS}""",
        "INSERT IGNORE INTO webhook_lease (name, owner, until_ms) VALUES ('deliver', '', 0)",
    ),
    (
        # Names compared case-insensitively (issue 16.10): each name's key (NFKC, case
        # folded: chatserver.domain.names.name_key) is unique. Tables rather than columns, so
        # that the step is safe to run again. Existing names take theirs in id order; a later
        # name with the same key as an earlier one ("bob" after "Bob") keeps working without one
        # (`chatserver db check-names` lists it).
        f"""CREATE TABLE IF NOT EXISTS user_name_key (
            name_key VARCHAR(255) NOT NULL PRIMARY KEY,
            userid INT NOT NULL,
            UNIQUE KEY user_name_key_by_user (userid),
            FOREIGN KEY (userid) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS group_name_key (
            name_key VARCHAR(255) NOT NULL PRIMARY KEY,
            groupid INT NOT NULL,
            UNIQUE KEY group_name_key_by_group (groupid),
            FOREIGN KEY (groupid) REFERENCES allgroup (id)
        ) {TABLE_OPTIONS}""",
        lambda cursor: key_existing_names(cursor, "user", "name", "user_name_key", "userid"),
        lambda cursor: key_existing_names(
            cursor, "allgroup", "groupname", "group_name_key", "groupid"
        ),
    ),
    (
        # Version 2, files (PROTOCOL.md "Files"): one row per upload (sha256 once its bytes
        # are stored, by that content address), and the kept messages that carry it.
        f"""CREATE TABLE IF NOT EXISTS chat_file (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            owner INT NOT NULL,
            name VARCHAR(255) NOT NULL,
            size BIGINT NOT NULL,
            mime VARCHAR(127) NOT NULL,
            created_ms BIGINT NOT NULL,
            sha256 CHAR(64) NULL,
            KEY chat_file_by_owner (owner, created_ms),
            KEY chat_file_by_sha256 (sha256)
        ) {TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS chat_file_ref (
            file_id BIGINT NOT NULL,
            msg_id BIGINT NOT NULL,
            groupid INT NULL,
            userid INT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (file_id, msg_id),
            KEY chat_file_ref_by_message (msg_id),
            FOREIGN KEY (file_id) REFERENCES chat_file (id) ON DELETE CASCADE
        ) {TABLE_OPTIONS}""",
    ),
    (
        # Issue 13.4: when an addressee last declined a requester (ms since the epoch), so
        # that the requester may ask again only a day later. Declines older than a day are
        # forgotten whenever a new one is written.
        f"""CREATE TABLE IF NOT EXISTS friend_decline (
            requester INT NOT NULL,
            addressee INT NOT NULL,
            declined_ms BIGINT NOT NULL,
            PRIMARY KEY (requester, addressee),
            KEY friend_decline_by_time (declined_ms),
            FOREIGN KEY (requester) REFERENCES user (id),
            FOREIGN KEY (addressee) REFERENCES user (id)
        ) {TABLE_OPTIONS}""",
    ),
    (
        # Webhook dead letters: events the receiver kept refusing, set aside (same id) so
        # that their conversations go on; an operator lists, retries or drops them.
        f"""CREATE TABLE IF NOT EXISTS webhook_dead (
            id BIGINT NOT NULL PRIMARY KEY,
            conversation VARCHAR(100) NOT NULL,
            body MEDIUMTEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            died_ms BIGINT NOT NULL,
            reason VARCHAR(255) NOT NULL
        ) {TABLE_OPTIONS}""",
    ),
    REKEY_NAMES,
)

LATEST_VERSION = len(MIGRATIONS)

# Access denied to a database, and to an operation (CREATE DATABASE without the privilege).
DENIED_ERRNOS = (1044, 1227)


def key_existing_names(cursor: MySQLCursor, table: str, column: str, keys: str, owner: str) -> None:
    """Give every name without a key its key, the earliest first; a duplicate key is left out
    (also used after `db import-legacy`)."""
    cursor.execute(
        f"SELECT t.id, t.{column} FROM {table} t LEFT JOIN {keys} k ON k.{owner} = t.id"
        " WHERE k.name_key IS NULL ORDER BY t.id"
    )
    rows: list[Any] = cursor.fetchall()
    for row_id, name in rows:
        cursor.execute(
            f"INSERT IGNORE INTO {keys} (name_key, {owner}) VALUES (%s, %s)",
            (name_key(str(name)), int(row_id)),
        )


def rekey_names(cursor: MySQLCursor, table: str, column: str, keys: str, owner: str) -> None:
    """Give every name that has a key today's key, the earliest first; one whose key an
    earlier name took is left without (it keeps working)."""
    cursor.execute(
        f"SELECT t.id, t.{column} FROM {keys} k JOIN {table} t ON t.id = k.{owner} ORDER BY t.id"
    )
    rows: list[Any] = cursor.fetchall()
    cursor.execute(f"DELETE FROM {keys}")
    for row_id, name in rows:
        cursor.execute(
            f"INSERT IGNORE INTO {keys} (name_key, {owner}) VALUES (%s, %s)",
            (name_key(str(name)), int(row_id)),
        )


def create_database_statement(name: str) -> str:
    """The statement that creates the database chatserver's tables go in."""
    return (
        f"CREATE DATABASE IF NOT EXISTS {quote_name(name)} "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    )


def create_database(server: MySQLConnectionAbstract, name: str) -> bool:
    """Create the database over a connection to none; False if the account may not."""
    cursor = cast(MySQLCursor, server.cursor())
    try:
        cursor.execute(create_database_statement(name))
    except Error as error:
        if error.errno in DENIED_ERRNOS:
            return False
        raise
    return True


def account_of(server: MySQLConnectionAbstract) -> str:
    """The account the server took the connection for, as GRANT names it: 'user'@'host'."""
    cursor = cast(MySQLCursor, server.cursor())
    cursor.execute("SELECT CURRENT_USER()")
    row: Any = cursor.fetchone()
    user, _, host = str(row[0]).rpartition("@")
    return f"'{user}'@'{host}'"


# Server-wide, so named after the database; MD5 keeps it within the 64 characters allowed.
LOCK_NAME = "CONCAT('chatserver-schema-', MD5(DATABASE()))"
LOCK_TIMEOUT_SECONDS = 60


class SchemaTooNew(RuntimeError):
    """The database was written by a newer chatserver than this one."""


def version_of(cursor: MySQLCursor) -> int:
    """The schema version, 0 for a database chatserver has never touched."""
    cursor.execute(
        "SELECT count(*) FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_version'"
    )
    if cursor.fetchone() == (0,):
        return 0
    cursor.execute("SELECT version FROM schema_version WHERE id = 1")
    row: Any = cursor.fetchone()  # the driver's annotations vary between releases
    return 0 if row is None else int(row[0])


def upgrade(connection: MySQLConnectionAbstract) -> int:
    """Apply the migrations the database lacks; return its version."""
    cursor = cast(MySQLCursor, connection.cursor())
    version = version_of(cursor)
    connection.commit()
    if version < LATEST_VERSION:
        cursor.execute(f"SELECT GET_LOCK({LOCK_NAME}, %s)", (LOCK_TIMEOUT_SECONDS,))
        if cursor.fetchone() != (1,):
            raise Unavailable("another process kept the schema upgrade lock too long")
        try:
            version = _migrate(connection, cursor)
        finally:
            cursor.execute(f"DO RELEASE_LOCK({LOCK_NAME})")
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this chatserver's {LATEST_VERSION}"
        )
    return version


def _migrate(connection: MySQLConnectionAbstract, cursor: MySQLCursor) -> int:
    collation = exact_collation(cursor)
    cursor.execute(
        f"""CREATE TABLE IF NOT EXISTS schema_version (
            id TINYINT NOT NULL PRIMARY KEY,
            version INT NOT NULL
        ) {TABLE_OPTIONS.format(collation=collation)}"""
    )
    cursor.execute("INSERT IGNORE INTO schema_version (id, version) VALUES (1, 0)")
    connection.commit()
    # Read again under the lock: another process may have migrated meanwhile.
    version = version_of(cursor)
    for step, migration in enumerate(MIGRATIONS, start=1):
        if version >= step:
            continue
        for statement in migration:
            if callable(statement):
                statement(cursor)
            else:
                cursor.execute(statement.format(collation=collation))
        cursor.execute("UPDATE schema_version SET version = %s WHERE id = 1", (step,))
        connection.commit()
        version = step
    return version


def exact_collation(cursor: MySQLCursor) -> str:
    cursor.execute(
        "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN"
        " (%s, %s, %s)",
        EXACT_COLLATIONS,
    )
    known = {str(name) for (name,) in cursor.fetchall()}
    # Only names from EXACT_COLLATIONS ever reach the DDL.
    return next(name for name in EXACT_COLLATIONS if name in known)
