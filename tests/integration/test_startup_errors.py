"""The first five minutes: each ordinary start-up mistake is one line on stderr naming the
problem and what to do, exit code 2, no traceback; `--version`; a MySQL database that does not
exist yet. Every case runs the real command (`python -m chatserver ...`) in a subprocess."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    HOST,
    Chat,
    ClusterProcess,
    ServerProcess,
    free_port,
    free_port_block,
)
from tests.unit.contract.mysql_server import MYSQL, PREFIX

TIMEOUT = 60


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=cwd, check=False,
    )


def one_line_and_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run failed as a start-up mistake should: one line on stderr, exit code 2."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    line = lines[0]
    assert line.startswith("chatserver: "), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("serve", "--host", HOST, *args, cwd=cwd)


# --------------------------------------------------------------------------- --version


def test_version_prints_the_installed_version_and_exits_0() -> None:
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"chatserver {version('chatserver')}\n"
    assert done.stderr == ""


# --------------------------------------------------------------------------- ports


def test_a_port_in_use_is_one_line(busy_port: int) -> None:
    done = serve("--port", str(busy_port), "--database", "memory://")
    one_line_and_exit_2(done, f"port {busy_port}", "in use", "--port", "choose another port")


def test_a_web_port_in_use_is_one_line_and_the_node_never_says_it_listens(
    busy_port: int,
) -> None:
    done = serve("--port", "0", "--ws-port", str(busy_port), "--database", "memory://")
    one_line_and_exit_2(done, f"port {busy_port}", "in use", "--ws-port")


def test_a_metrics_port_in_use_is_one_line(busy_port: int) -> None:
    done = serve("--port", "0", "--metrics-port", str(busy_port), "--database", "memory://")
    one_line_and_exit_2(done, f"port {busy_port}", "in use", "--metrics-port")


@pytest.mark.parametrize(
    ("option", "value"),
    [("--port", "99999"), ("--port", "65536"), ("--port", "-1"), ("--ws-port", "70000"),
     ("--metrics-port", "-5")],
)
def test_a_port_out_of_range_is_one_line(option: str, value: str) -> None:
    args = ["--port", "0", "--database", "memory://", option, value]
    one_line_and_exit_2(serve(*args), f"{option} {value}", "1 to 65535")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--frame-limit", "0", "1024 or more"), ("--frame-limit", "10", "1024 or more"),
     ("--idle-timeout", "-1", "more than 0"),
     ("--request-rate", "0", "more than 0"), ("--request-burst", "0", "more than 0"),
     ("--node-lease", "-1", "more than 0"), ("--stored-limit", "-1", "0 or more"),
     ("--connections-per-address", "-2", "0 or more"), ("--hash-cost", "3", "power of 2")],
)
def test_a_number_serve_cannot_work_with_is_one_line(option: str, value: str, says: str) -> None:
    done = serve("--port", "0", "--database", "memory://", option, value)
    one_line_and_exit_2(done, option, says)


def test_an_address_the_machine_does_not_have_is_one_line() -> None:
    done = run_cli("serve", "--host", "192.0.2.1", "--port", "0", "--database", "memory://")
    one_line_and_exit_2(done, "192.0.2.1", "--host")


def test_a_setting_in_the_environment_that_is_not_a_number_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    done = subprocess.run(
        [sys.executable, "-m", "chatserver", "serve", "--database", "memory://"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env={**env, "CHATSERVER_PORT": "six thousand"},
    )
    one_line_and_exit_2(done, "CHATSERVER_PORT='six thousand' is not an integer")


def test_an_unknown_log_level_is_one_line() -> None:
    done = serve("--port", "0", "--database", "memory://", "--log-level", "LOUD")
    one_line_and_exit_2(done, "--log-level", "DEBUG, INFO")


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize("command", ["serve", "db upgrade"])
def test_a_sqlite_file_in_a_missing_folder_is_one_line(command: str, tmp_path: Path) -> None:
    args = ["--database", "sqlite:///nodir/x.db"]
    if command == "serve":
        done = serve("--port", "0", *args, cwd=tmp_path)
    else:
        done = run_cli("db", "upgrade", *args, cwd=tmp_path)
    one_line_and_exit_2(done, "nodir/x.db", "folder nodir does not exist", "mkdir -p nodir")
    assert not (tmp_path / "nodir").exists()


def test_a_sqlite_file_whose_folder_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    done = serve("--port", "0", "--database", f"sqlite:///{tmp_path}/plain/x.db")
    one_line_and_exit_2(done, "plain is not a folder", "--database")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_sqlite_file_in_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    done = serve("--port", "0", "--database", f"sqlite:///{folder}/x.db")
    one_line_and_exit_2(done, "not writable")


def test_a_sqlite_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    done = serve("--port", "0", "--database", f"sqlite:///{junk}")
    one_line_and_exit_2(done, str(junk), "not a database")


# --------------------------------------------------------------------------- Redis, MySQL


def test_an_unreachable_redis_is_one_line() -> None:
    done = serve("--port", "0", "--database", "memory://", "--bus", "redis://127.0.0.1:1/0")
    one_line_and_exit_2(done, "cannot reach Redis at redis://127.0.0.1:1/0", "--bus")


@pytest.mark.parametrize("command", ["serve", "db upgrade"])
def test_an_unreachable_mysql_is_one_line(command: str) -> None:
    args = ["--database", "mysql://chat:s3cret@127.0.0.1:1/chat"]
    done = serve("--port", "0", *args) if command == "serve" else run_cli("db", "upgrade", *args)
    line = one_line_and_exit_2(done, "cannot reach MySQL at 127.0.0.1:1", "--database")
    assert "s3cret" not in line


def test_a_wrong_mysql_password_is_one_line() -> None:
    MYSQL.shared_database()  # skips the test when MariaDB is not there
    done = serve("--port", "0", "--database", "mysql://root:wrong@127.0.0.1:3306/chat")
    line = one_line_and_exit_2(done, "refused user 'root'", "password")
    assert "wrong" not in line


# --------------------------------------------------------------------------- cluster


@pytest.fixture
def cluster_ports() -> int:
    """The first of four free consecutive ports: the cluster's and its nodes' (by default
    right after it), from one block: ports picked one by one may coincide (none is held
    between the picks). ClusterProcess takes its ports the same way."""
    return free_port_block(4)


def cluster(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("cluster", "--nodes", "2", "--host", HOST, "--port", str(port), *args)


def test_cluster_port_out_of_range_is_one_line() -> None:
    one_line_and_exit_2(cluster(99999), "--port 99999", "1 to 65535")
    one_line_and_exit_2(cluster(65535), "65536-65537", "go past 65535")


def test_cluster_of_no_nodes_is_one_line(cluster_ports: int) -> None:
    one_line_and_exit_2(run_cli("cluster", "--nodes", "0", "--port", str(cluster_ports)),
                        "--nodes 0", "at least 1")


def test_cluster_ports_in_use_are_one_line(busy_port: int, cluster_ports: int) -> None:
    one_line_and_exit_2(cluster(busy_port), f"port {busy_port}", "in use", "--port")
    done = cluster(cluster_ports, "--node-port", str(busy_port))
    one_line_and_exit_2(done, f"port {busy_port}", "in use", "a node's port")


def test_cluster_with_an_unreachable_redis_is_one_line(
    cluster_ports: int, tmp_path: Path
) -> None:
    done = cluster(cluster_ports, "--database", f"sqlite:///{tmp_path}/c.db",
                   "--bus", "redis://127.0.0.1:1/0")
    one_line_and_exit_2(done, "cannot reach Redis", "--bus")


def test_cluster_with_a_sqlite_file_in_a_missing_folder_is_one_line(
    cluster_ports: int, tmp_path: Path
) -> None:
    done = cluster(cluster_ports, "--database", f"sqlite:///{tmp_path}/nodir/c.db")
    one_line_and_exit_2(done, "nodir does not exist")


# --------------------------------------------------------------------------- a missing database


def admin(statement: str) -> None:
    MYSQL.execute(statement)


@pytest.fixture
def absent_database() -> Iterator[str]:
    """The name of a MariaDB database that does not exist; dropped afterwards if created."""
    MYSQL.shared_database()  # skips the test when MariaDB is not there
    name = f"{PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    yield name
    admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def account_without_create() -> Iterator[tuple[str, str]]:
    """A MariaDB account that may connect but not create databases; dropped afterwards."""
    MYSQL.shared_database()
    user, password = f"nc_{secrets.token_hex(4)}", secrets.token_hex(8)
    for host in ("localhost", "127.0.0.1"):
        admin(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
    yield user, password
    for host in ("localhost", "127.0.0.1"):
        admin(f"DROP USER IF EXISTS '{user}'@'{host}'")


def character_set_of(database: str) -> str | None:
    rows = MYSQL.execute(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA"
        " WHERE SCHEMA_NAME = %s", (database,),
    )
    return str(rows[0][0]) if rows else None


def test_db_upgrade_creates_a_missing_mysql_database_in_utf8mb4(absent_database: str) -> None:
    url = f"mysql://root@127.0.0.1:3306/{absent_database}"
    done = run_cli("db", "upgrade", "--database", url)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"schema at version [1-9]\d*\n", done.stdout), done.stdout
    assert character_set_of(absent_database) == "utf8mb4"
    # It says so, in chatserver's own words only.
    assert re.fullmatch(
        rf"\S+ \S+ INFO chatserver\.adapters\.mysql\.unit_of_work: created database "
        rf"`{absent_database}`\n", done.stderr), done.stderr
    again = run_cli("db", "upgrade", "--database", url)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_serve_names_the_statement_that_creates_a_missing_mysql_database(
    absent_database: str,
) -> None:
    done = serve("--port", "0", "--database", f"mysql://root@127.0.0.1:3306/{absent_database}")
    one_line_and_exit_2(
        done, f"database `{absent_database}` does not exist",
        "chatserver db upgrade --database",
        f"CREATE DATABASE IF NOT EXISTS `{absent_database}` CHARACTER SET utf8mb4",
    )
    assert character_set_of(absent_database) is None


def test_db_upgrade_without_the_privilege_names_the_statements_to_run(
    absent_database: str, account_without_create: tuple[str, str]
) -> None:
    user, password = account_without_create
    url = f"mysql://{user}:{password}@127.0.0.1:3306/{absent_database}"
    line = one_line_and_exit_2(
        run_cli("db", "upgrade", "--database", url),
        f"CREATE DATABASE IF NOT EXISTS `{absent_database}` CHARACTER SET utf8mb4",
        f"GRANT ALL PRIVILEGES ON `{absent_database}`.* TO '{user}'@",
    )
    assert password not in line
    assert character_set_of(absent_database) is None
    # The statements it names are the ones that work: run them, and the upgrade succeeds.
    statements = line.partition(" run ")[2].rstrip(";").split("; ")
    assert len(statements) == 2
    for statement in statements:
        admin(statement)
    done = run_cli("db", "upgrade", "--database", url)
    assert done.returncode == 0, done.stderr
    assert character_set_of(absent_database) == "utf8mb4"


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
def test_cluster_creates_a_missing_mysql_database_and_serves(
    absent_database: str, tmp_path: Path
) -> None:
    cluster = ClusterProcess(tmp_path, tmp_path / "cluster.log")
    cluster.database = f"mysql://root@127.0.0.1:3306/{absent_database}"
    cluster.start()
    try:
        chat = Chat(cluster)
        chat.online(chat.user())
        chat.close_all()
    finally:
        cluster.stop()
    assert character_set_of(absent_database) == "utf8mb4"
    cluster.assert_no_traceback()


# --------------------------------------------------------------------------- quiet logs

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) (\S+): (.*)$")


@pytest.mark.parametrize("store", ["sqlite", "mysql"])
def test_a_run_with_a_login_logs_only_chatserver_lines_at_the_default_level(
    store: str, tmp_path: Path
) -> None:
    database = (
        f"sqlite:///{tmp_path}/chat.db" if store == "sqlite" else MYSQL.new_database()
    )
    server = ServerProcess(database, tmp_path / "server.log").start()
    chat = Chat(server)
    try:
        user = chat.user()
        chat.online(user)
    finally:
        chat.close_all()
        server.stop()
    # The run that started (an attempt before it may have lost its port to another process).
    lines = server.log_text().split("---- starting on port")[-1].splitlines()[1:]
    assert lines, "the server logged nothing"
    for line in lines:
        match = LOG_LINE.match(line)
        assert match, f"not a log line of chatserver's: {line!r}"
        _level, name, message = match.groups()
        assert name == "chatserver" or name.startswith("chatserver."), line
        assert "collection took" not in message, line
    stopping = [line for line in lines if "stopping on SIGTERM" in line]
    assert len(stopping) == 1 and stopping[0].endswith("logging out 0 sessions"), stopping


def test_stopping_with_one_session_says_session_not_sessions(tmp_path: Path) -> None:
    server = ServerProcess("memory://", tmp_path / "server.log").start()
    chat = Chat(server)
    try:
        chat.online(chat.user())
        server.stop()
    finally:
        chat.close_all()
        server.stop()
    assert "logging out 1 session\n" in server.log_text(), server.log_tail()


def test_the_port_held_by_a_failed_start_is_free_again(busy_port: int) -> None:
    """A failed start lets go of what it had taken (here: the TCP port before the web one)."""
    port = free_port()
    done = serve("--port", str(port), "--ws-port", str(busy_port), "--database", "memory://")
    one_line_and_exit_2(done, "--ws-port")
    with socket.socket() as probe:
        probe.bind((HOST, port))
