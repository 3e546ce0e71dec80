"""Files kept in an S3-compatible bucket (`--files s3://BUCKET/PREFIX?endpoint=URL`, issue 14)
against moto's S3 server on loopback: a group member who was away downloads a 9 MiB file
(more than boto3's multipart threshold) after logging in, sha256 equal, Range too; the bytes
are in the bucket under their sha256; the store deletes them when told."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, free_port
from tests.integration.test_files import FILE_KEY, payload
from tests.integration.test_files import http_request as http

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

pytestmark = pytest.mark.integration

BUCKET = "chat-files"
SIZE = 9 * 1024 * 1024


def wait_listening(port: int, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} does not listen on {port}") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=out, stderr=out,
        )
    try:
        try:
            wait_listening(port, "moto's S3 server")
        except RuntimeError as error:
            raise RuntimeError(f"{error}: {log.read_text()[-2000:]}") from None
        yield f"http://{HOST}:{port}"
    finally:
        moto.terminate()
        moto.wait(10)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)


def test_a_member_away_during_an_upload_to_the_bucket_downloads_it(
    tmp_path: Path, s3_endpoint: str, aws: None
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    web_port = free_port()
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log",
        ["--ws-port", str(web_port), "--file-key", FILE_KEY,
         "--files", f"s3://{BUCKET}/node-files?endpoint={s3_endpoint}"],
    ).start()
    chat = Chat(server)
    try:
        alice, bob = chat.users(2)
        ca, cb = chat.online_all(alice, bob)
        group_id, _ = chat.make_group(ca, cb)
        cb.close()
        data = payload(SIZE, 7)
        expected = hashlib.sha256(data).hexdigest()
        ack = ca.ok({"msgid": 33, "name": "map.bin", "size": SIZE,
                     "mime": "application/octet-stream"})
        started = time.perf_counter()
        status, _, body = http(web_port, "PUT", ack["upload_url"], data)
        up = time.perf_counter() - started
        assert status == 201, body
        ca.ok({"msgid": 10, "groupid": group_id, "msg": "the map", "file": ack["file_id"]})
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert keys == [f"node-files/{expected[:2]}/{expected}"]
        cb = chat.online(bob)
        url = cb.ok({"msgid": 34, "file_id": ack["file_id"]})["url"]
        started = time.perf_counter()
        status, headers, got = http(web_port, "GET", url)
        down = time.perf_counter() - started
        assert status == 200 and hashlib.sha256(got).hexdigest() == expected
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, headers, part = http(web_port, "GET", url, headers={"Range": "bytes=5-14"})
        assert status == 206 and part == data[5:15]
        assert headers["Content-Range"] == f"bytes 5-14/{SIZE}"
        status, _, tail = http(web_port, "GET", url, headers={"Range": "bytes=-4"})
        assert status == 206 and tail == data[-4:]
        print(f"9 MiB through moto's S3 on loopback: upload {SIZE / up / 1e6:.0f} MB/s, "
              f"download {SIZE / down / 1e6:.0f} MB/s")
        assert server.proc is not None
        staging = Path(tempfile.gettempdir()) / f"chatserver-uploads-{server.proc.pid}"
        assert not any(staging.iterdir())  # the staged upload went once in the bucket
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_the_store_deletes_what_collection_hands_it(s3_endpoint: str, aws: None,
                                                    tmp_path: Path) -> None:
    import anyio

    from chatserver.adapters.web.s3_store import S3Store

    store = S3Store(f"s3://{BUCKET}-2?endpoint={s3_endpoint}", tmp_path / "staging")
    store.client.create_bucket(Bucket=f"{BUCKET}-2")
    store.prepare()
    upload = store.new_upload()
    upload.write_bytes(b"bytes")
    sha = hashlib.sha256(b"bytes").hexdigest()
    store.keep(upload, sha)
    assert store.client.get_object(Bucket=f"{BUCKET}-2", Key=store.key(sha))["Body"].read() == (
        b"bytes")
    anyio.run(store.delete, sha)
    assert store.client.list_objects_v2(Bucket=f"{BUCKET}-2").get("KeyCount") == 0


def test_two_nodes_behind_nginx_on_mariadb_redis_and_the_bucket_share_files(
    tmp_path: Path, s3_endpoint: str, aws: None
) -> None:
    """The cluster case of the issue's "Done when": two nodes behind nginx (its stream block
    for the chat, its http block for the page and files, as `chatserver cluster` writes them),
    MariaDB, Redis and the bucket. Alice and Bob are on different nodes (least_conn); Bob is
    away while Alice uploads 20 MiB through nginx, logs in again and downloads it through nginx
    (twice: nginx picks a node for each), sha256 equal, Range too; a link signed by one node is
    good on each (one --file-key)."""
    import secrets
    import shutil
    import signal

    import mysql.connector

    from chatserver.entrypoints.local_cluster import nginx_config, start_nginx

    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    database = f"chatserver_test_files_{secrets.token_hex(4)}"
    admin = mysql.connector.connect(host="127.0.0.1", port=3306, user="root")
    admin.cursor().execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    bucket = f"cluster-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    bus = f"redis://127.0.0.1:6379/0?namespace=test-files-{secrets.token_hex(4)}"
    servers: list[ServerProcess] = []
    web_ports = [free_port(), free_port()]
    nginx: subprocess.Popen[bytes] | None = None
    run_dir = tmp_path / "nginx"
    run_dir.mkdir()
    try:
        for name, web_port in zip("ab", web_ports, strict=True):
            servers.append(ServerProcess(
                f"mysql://root@127.0.0.1:3306/{database}", tmp_path / f"node-{name}.log",
                ["--ws-port", str(web_port), "--file-key", FILE_KEY, "--bus", bus,
                 "--node-id", f"files-{name}", "--proxy-protocol", "--trusted-proxy", HOST,
                 "--files", f"s3://{bucket}/shared?endpoint={s3_endpoint}"],
            ).start())
        chat_port, web_port = free_port(), free_port()
        nginx = start_nginx(run_dir, nginx_config(
            run_dir, [server.port or 0 for server in servers], HOST, chat_port, web_ports,
            web_port))
        wait_listening(chat_port, "nginx")
        wait_listening(web_port, "nginx")
        # The clients know nginx only: its chat port, and its web port for the files.
        front = ServerProcess("(nginx)", tmp_path / "unused.log")
        front.port = chat_port
        chat = Chat(front)
        alice, bob = chat.users(2)
        ca = chat.online(alice)
        cb = chat.online(bob)  # least_conn: the node Alice is not on
        group_id, _ = chat.make_group(ca, cb)
        cb.close()  # bob is away for the upload
        data = payload(20 * 1024 * 1024, 11)
        expected = hashlib.sha256(data).hexdigest()
        ack = ca.ok({"msgid": 33, "name": "film.bin", "size": len(data),
                     "mime": "application/octet-stream"})
        started = time.perf_counter()
        status, _, body = http(web_port, "PUT", ack["upload_url"], data)
        up = time.perf_counter() - started
        assert status == 201, body
        ca.ok({"msgid": 10, "groupid": group_id, "msg": "", "file": ack["file_id"]})
        cb = chat.online(bob)
        assert cb.ack is not None
        assert [m["file"]["sha256"] for m in cb.ack["offlinemsg"] if "file" in m] == [expected]
        url = cb.ok({"msgid": 34, "file_id": ack["file_id"]})["url"]
        downs = []
        for _ in range(2):
            started = time.perf_counter()
            status, _, got = http(web_port, "GET", url)
            downs.append(time.perf_counter() - started)
            assert status == 200 and hashlib.sha256(got).hexdigest() == expected
        status, headers, part = http(web_port, "GET", url, headers={"Range": "bytes=100-199"})
        assert status == 206 and part == data[100:200], headers
        # Signed by one node, good on each node directly too.
        for port in web_ports:
            status, _, part = http(port, "GET", url, headers={"Range": "bytes=0-99"})
            assert status == 206 and part == data[:100]
        uploaded = [server.log_text().count(f"file {ack['file_id']} uploaded")
                    for server in servers]
        assert sorted(uploaded) == [0, 1], uploaded  # once, on one node
        print(f"20 MiB through nginx to two nodes and moto's S3: upload "
              f"{len(data) / up / 1e6:.0f} MB/s (on node {'ab'[uploaded.index(1)]}), download "
              + ", ".join(f"{len(data) / d / 1e6:.0f} MB/s" for d in downs))
        chat.close_all()
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        for server in servers:
            server.stop()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
        for server in servers:
            server.assert_no_traceback()
    error_log = run_dir / "nginx-error.log"
    assert "[error]" not in (error_log.read_text() if error_log.exists() else ""), (
        error_log.read_text())
