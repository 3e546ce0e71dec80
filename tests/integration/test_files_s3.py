"""Files kept in an S3-compatible bucket (`--files s3://BUCKET/PREFIX?endpoint=URL`, issue 14)
against moto's S3 server on loopback: a group member who was away downloads a 9 MiB file
(more than boto3's multipart threshold) after logging in, sha256 equal, Range too; the bytes
are in the bucket under their sha256; the store deletes them when told."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, free_port
from tests.integration.test_files import FILE_KEY, payload

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

pytestmark = pytest.mark.integration

BUCKET = "chat-files"
SIZE = 9 * 1024 * 1024


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
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()[-2000:]) from None
                time.sleep(0.1)
        yield f"http://{HOST}:{port}"
    finally:
        moto.terminate()
        moto.wait(10)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)


def http(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


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
        staging = Path("/tmp") / f"chatserver-uploads-{server.proc.pid}"
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
