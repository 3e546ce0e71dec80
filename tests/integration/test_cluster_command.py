"""`chatserver cluster` as an operator meets it in a terminal: Ctrl+C (SIGINT to the whole
foreground process group) stops every node once and cleanly, and a cluster on MariaDB with a
web port shares files, as README says it does."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from chatserver.entrypoints.client.library import DirectMessage, connect
from tests.integration import conftest
from tests.integration.conftest import HOST, ClusterProcess, free_port_block

pytestmark = pytest.mark.integration


def ports(web: bool) -> tuple[int, int, int]:
    """nginx's port, its web port (0: none) and the first node's, from one block of free ports
    (ports picked one by one may collide with the block the nodes take)."""
    first = free_port_block(6 if web else 3)
    return first, first + 1 if web else 0, first + 2 if web else first + 1


@pytest.mark.parametrize("web", [False, True])
def test_the_harness_takes_a_clusters_ports_from_one_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, web: bool
) -> None:
    """conftest's ClusterProcess gives nginx, its web port and every node's ports distinct
    ports, even when the kernel hands out the port it just gave again (nothing holds a port
    between two picks): picked one by one, nginx's port and the nodes' block could coincide."""
    again = free_port_block(8)
    monkeypatch.setattr(conftest, "free_port", lambda: again)
    cluster = ClusterProcess(tmp_path, tmp_path / "cluster.log", nodes=3, web=web)
    port = cluster.choose_port()
    command = cluster.command(port)
    assert command[command.index("--port") + 1] == str(port)
    node_port = int(command[command.index("--node-port") + 1])
    taken = [port, *range(node_port, node_port + 3 * (2 if web else 1))]
    if web:
        assert cluster.ws_port is not None
        assert command[command.index("--ws-port") + 1] == str(cluster.ws_port)
        taken.append(cluster.ws_port)
    else:
        assert "--ws-port" not in command and cluster.ws_port is None
    assert len(set(taken)) == len(taken), taken
    assert set(taken) <= set(range(again, again + 8))


@contextmanager
def cluster(tmp_path: Path, database: str, *, web: bool = False
            ) -> Iterator[tuple[subprocess.Popen[bytes], Path, int, int]]:
    """`chatserver cluster --nodes 2` in a session of its own, as a terminal runs a foreground
    job: its process group is what Ctrl+C signals. Yields the process, its log, its port and
    its web port (0: none)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    port, ws_port, node_port = ports(web)
    extra = ["--ws-port", str(ws_port)] if web else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    log_path = tmp_path / "cluster.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatserver", "cluster", "--host", HOST, "--port", str(port),
             "--node-port", str(node_port), "--nodes", "2", "--database", database,
             "--bus", f"redis://127.0.0.1:6379/0?namespace=test-{secrets.token_hex(4)}",
             *extra],
            stdout=log, stderr=log, env=env, cwd=tmp_path, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "cluster listening" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield proc, log_path, port, ws_port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_ctrl_c_reaches_the_cluster_alone_which_stops_each_node_once(tmp_path: Path) -> None:
    """QA: Ctrl+C signalled the nodes and nginx too (one process group): each node began its
    stop on SIGINT, nginx quit at once (not gracefully), and the cluster's own SIGTERM then
    reached nodes still stopping as a second signal, "stopping at once" (seen with 300
    sessions). Now the nodes and nginx have sessions of their own and hear only the cluster."""
    with cluster(tmp_path, f"sqlite:///{tmp_path / 'c.db'}") as (proc, log_path, port, _):
        pgid = os.getpgid(proc.pid)
        children = subprocess.run(["ps", "-o", "pid=,pgid=", "--ppid", str(proc.pid)],
                                  capture_output=True, text=True, check=True).stdout.split()
        groups = {int(g) for g in children[1::2]}
        assert len(children) == 2 * 3, children  # two nodes and nginx
        assert pgid not in groups, (pgid, children)

        async def two_users() -> None:
            async with connect(HOST, port) as alice, connect(HOST, port) as bob:
                a = await alice.register(f"a-{secrets.token_hex(3)}", "pw")
                b = await bob.register(f"b-{secrets.token_hex(3)}", "pw")
                await alice.login(a, "pw", device="t")
                await bob.login(b, "pw", device="t")
                await alice.send_chat(b, "before the stop")
                assert isinstance(await bob.next_event(), DirectMessage)
                os.killpg(pgid, signal.SIGINT)  # what a terminal does on Ctrl+C
                with anyio.fail_after(20):
                    async for _ in bob.events():
                        pass  # until the connection closes

        anyio.run(two_users)
        assert proc.wait(30) == 0
    text = log_path.read_text()
    assert "cluster stopped" in text, text
    node_lines = [line for line in text.splitlines() if "[node" in line]
    assert sum("stopping on SIGTERM" in line for line in node_lines) == 2, text
    assert not any("stopping on SIGINT" in line or "second" in line for line in node_lines), text
    assert "Traceback" not in text, text


def test_a_cluster_on_mariadb_with_a_web_port_shares_files(tmp_path: Path) -> None:
    """QA: README says `chatserver cluster --ws-port P` puts the files of every node behind
    nginx, but on MySQL (README's example) the nodes had no --files (`cluster` had no such
    option), so FILE_UPLOAD was errno 11 "files need the web port (--ws-port)" with the web
    port on. Now the nodes share one folder, chatserver-files in the current folder, by
    default, and `cluster --files` names another."""
    import mysql.connector

    name = f"chatserver_test_cluster_{secrets.token_hex(4)}"
    database = f"mysql://root@127.0.0.1:3306/{name}"
    data = os.urandom(300_000)
    try:
        with cluster(tmp_path, database, web=True) as (_, log_path, port, ws_port):

            async def share() -> None:
                async with (connect(HOST, port, web_port=ws_port) as alice,
                            connect(HOST, port, web_port=ws_port) as bob):
                    a = await alice.register(f"a-{secrets.token_hex(3)}", "pw")
                    b = await bob.register(f"b-{secrets.token_hex(3)}", "pw")
                    await alice.login(a, "pw", device="t")
                    await bob.login(b, "pw", device="t")
                    (tmp_path / "report.bin").write_bytes(data)
                    await alice.send_file(tmp_path / "report.bin", to_id=b)
                    message = await bob.next_event()
                    assert isinstance(message, DirectMessage) and message.file is not None
                    downloads = tmp_path / "downloads"
                    downloads.mkdir()
                    got = await bob.download(message.file, downloads)
                    assert got.read_bytes() == data

            try:
                anyio.run(share)
            except Exception as error:  # say what the nodes and nginx said
                errors = tmp_path.glob("chatserver-cluster-*/nginx-error.log")
                raise AssertionError(f"{error!r}\n{log_path.read_text()[-6000:]}\n"
                                     + "".join(p.read_text()[-2000:] for p in errors)) from error
        assert "Traceback" not in log_path.read_text()
        kept = [p for p in (tmp_path / "chatserver-files").rglob("*") if p.is_file()]
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in kept] == [
            hashlib.sha256(data).hexdigest()]
    finally:
        admin = mysql.connector.connect(host="127.0.0.1", port=3306, user="root")
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def run_cluster(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[int, str, float]:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    port, ws_port, node_port = ports(web=True)
    extra = tuple(str(ws_port) if arg == "WS_PORT" else arg for arg in extra)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "chatserver", "cluster", "--host", HOST, "--port",
         str(port), "--node-port", str(node_port), "--nodes", "2",
         "--database", f"sqlite:///{tmp_path / 'c.db'}",
         "--bus", f"redis://127.0.0.1:6379/0?namespace=test-{secrets.token_hex(4)}", *extra],
        capture_output=True, text=True, env={**clean, **env}, cwd=tmp_path, timeout=60,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def test_a_setting_in_the_environment_the_nodes_would_refuse_is_one_line_at_once(
    tmp_path: Path,
) -> None:
    """QA: CHATSERVER_HASH_COST=3 (inherited by the nodes) printed the nodes' refusal once per
    node, then the cluster waited 20 s and said "nothing listens on 127.0.0.1:PORT"."""
    code, err, took = run_cluster(tmp_path, {"CHATSERVER_HASH_COST": "3"})
    assert code == 2, err
    assert err.splitlines() == [
        "chatserver: --hash-cost (or CHATSERVER_HASH_COST) 3 is not a power of 2 from 2 up "
        "(the default is 16384)"], err
    print(f"refused in {took:.1f} s")


def test_a_node_that_fails_at_start_stops_the_cluster_at_once(tmp_path: Path) -> None:
    """A mistake only a node finds when it starts (here --files names a file, not a folder):
    the cluster says so as soon as the node exits, not after waiting 20 s for its port."""
    (tmp_path / "not-a-folder").write_text("x")
    code, err, took = run_cluster(tmp_path, {}, "--ws-port", "WS_PORT",
                                  "--files", str(tmp_path / "not-a-folder"))
    assert code == 2, err
    assert "a node exited with code 2 before it listened" in err, err
    assert "nothing listens" not in err, err
    assert "Traceback" not in err, err
    print(f"stopped {took:.1f} s after the start")
