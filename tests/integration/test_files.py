"""Files in chats (PROTOCOL.md Version 2, "Files", issue 14) on one node with SQLite and a
folder: FILE_UPLOAD, PUT to the signed path, a chat carrying the file, FILE_URL, GET with
Range; the limits (errno 14 before any byte, nothing stored), who may see a file (errno 12),
forged and expired links, an upload cut short. A real server process on loopback, so its
memory can be read while 20 MiB go up and down."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
BIG = 20 * MIB
FILE_KEY = "a-test-key-every-node-shares"
QUOTA = 45 * MIB  # two 20 MiB files a day, not three


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on its own connection: status, headers, body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class FileServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.web_port = free_port()
        self.files = directory / "chat-files"  # the default: beside chat.db
        self.process = ServerProcess(
            f"sqlite:///{directory / 'chat.db'}", directory / "server.log",
            ["--ws-port", str(self.web_port), "--file-key", FILE_KEY,
             "--file-quota", str(QUOTA)],
        ).start()
        assert self.process.proc is not None
        self.pid = self.process.proc.pid
        time.sleep(0.2)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def http(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.web_port, method, path, body, headers)

    def stored(self) -> list[Path]:
        """Every file in the folder (the uploads in progress too)."""
        return sorted(p for p in self.files.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    server = FileServer(tmp_path_factory.mktemp("files"))
    try:
        yield server
    finally:
        server.process.stop()
        server.process.assert_no_traceback()


@pytest.fixture
def chat(files_server: FileServer) -> Iterator[Chat]:
    c = Chat(files_server.process)
    yield c
    c.close_all()


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(server: FileServer, client, name: str, data: bytes, mime: str) -> int:  # type: ignore[no-untyped-def]
    ack = client.ok({"msgid": 33, "name": name, "size": len(data), "mime": mime})
    status, _, body = server.http("PUT", ack["upload_url"], data)
    assert status == 201, body
    return int(ack["file_id"])


def test_a_member_offline_during_a_20_mib_upload_downloads_it_after_login(
    files_server: FileServer, chat: Chat
) -> None:
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    group_id, _ = chat.make_group(ca, cb)
    cb.close()  # bob is away for the upload
    data = payload(BIG, 1)
    expected = hashlib.sha256(data).hexdigest()

    rss_before = files_server.rss_kib()
    ack = ca.ok({"msgid": 33, "name": "holiday.bin", "size": BIG,
                 "mime": "application/octet-stream"})
    assert ack["upload_url"].startswith("/files/upload/")
    started = time.perf_counter()
    status, _, body = files_server.http("PUT", ack["upload_url"], data)
    upload_seconds = time.perf_counter() - started
    rss_after_upload = files_server.rss_kib()
    assert status == 201, body
    file_id = ack["file_id"]
    sent = ca.ok({"msgid": 10, "groupid": group_id, "msg": "", "file": file_id})

    cb = chat.online(bob)
    assert cb.ack is not None
    carried = [m for m in cb.ack["offlinemsg"] if m["msg_id"] == sent["msg_id"]]
    assert carried and carried[0]["file"] == {
        "id": file_id, "name": "holiday.bin", "size": BIG,
        "mime": "application/octet-stream", "sha256": expected,
    }
    url = cb.ok({"msgid": 34, "file_id": file_id})["url"]
    started = time.perf_counter()
    status, headers, got = files_server.http("GET", url)
    download_seconds = time.perf_counter() - started
    rss_after_download = files_server.rss_kib()
    assert status == 200
    assert hashlib.sha256(got).hexdigest() == expected
    assert headers["Content-Disposition"].startswith("attachment")
    assert headers["X-Content-Type-Options"] == "nosniff"
    growth = max(rss_after_upload, rss_after_download) - rss_before
    print(f"20 MiB upload {BIG / upload_seconds / 1e6:.0f} MB/s, download "
          f"{BIG / download_seconds / 1e6:.0f} MB/s on loopback; server RSS {rss_before} KiB "
          f"before, +{rss_after_upload - rss_before} KiB after the upload, "
          f"+{rss_after_download - rss_before} KiB after the download")
    assert growth <= 10 * 1024, f"the server's RSS grew by {growth} KiB"

    # Range: a part of it, as a player or a resumed download asks.
    status, headers, part = files_server.http("GET", url, headers={"Range": "bytes=1000-1999"})
    assert status == 206 and part == data[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{BIG}"

    # Carol is no member: errno 12, as for a file id that does not exist.
    cc.err({"msgid": 34, "file_id": file_id}, 12)
    cc.err({"msgid": 34, "file_id": file_id + 1000}, 12)
    # The group's member who leaves loses the file; the sender keeps it.
    cb.ok({"msgid": 17, "groupid": group_id})
    cb.err({"msgid": 34, "file_id": file_id}, 12)
    ca.ok({"msgid": 34, "file_id": file_id})


def sign(*parts: object) -> str:
    text = ":".join(str(p) for p in parts).encode()
    return hmac.new(FILE_KEY.encode(), text, hashlib.sha256).hexdigest()


def test_forged_expired_and_borrowed_links_are_refused(
    files_server: FileServer, chat: Chat
) -> None:
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    file_id = upload(files_server, ca, "note.txt", b"for bob only", "text/plain")
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "see attached", "file": file_id})
    url = cb.ok({"msgid": 34, "file_id": file_id})["url"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    path = urlsplit(url).path
    assert files_server.http("GET", url)[2] == b"for bob only"
    forged = f"{path}?u={query['u']}&e={query['e']}&s={'0' * 64}"
    assert files_server.http("GET", forged)[0] == 403
    past = int(time.time() * 1000) - 1
    expired = f"{path}?u={bob.id}&e={past}&s={sign('down', file_id, bob.id, past)}"
    assert files_server.http("GET", expired)[0] == 403
    # Bob's link with another user's id in it is no longer signed.
    borrowed = f"{path}?u={alice.id}&e={query['e']}&s={query['s']}"
    assert files_server.http("GET", borrowed)[0] == 403
    # An upload link of bob's own making is refused too.
    own = cb.ok({"msgid": 33, "name": "x", "size": 3, "mime": "text/plain"})
    upload_path = urlsplit(own["upload_url"]).path
    assert files_server.http("PUT", f"{upload_path}?e={past}&s={sign('up', own['file_id'], past)}",
                             b"abc")[0] == 403
    assert files_server.http("PUT", f"{upload_path}?e=99999999999999&s={'1' * 64}",
                             b"abc")[0] == 403
    assert files_server.http("PUT", own["upload_url"], b"abc")[0] == 201
    assert files_server.http("PUT", own["upload_url"], b"abc")[0] == 409  # one upload per link


def test_pictures_are_shown_other_types_saved_and_never_svg_or_html_inline(
    files_server: FileServer, chat: Chat
) -> None:
    (alice,) = chat.users(1)
    (ca,) = chat.online_all(alice)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    for name, mime, body, inline in [
        ("cat.png", "image/png", png, True),
        ("logo.svg", "image/svg+xml", b"<svg onload='alert(1)'/>", False),
        ("page.html", "text/html", b"<script>alert(1)</script>", False),
    ]:
        file_id = upload(files_server, ca, name, body, mime)
        url = ca.ok({"msgid": 34, "file_id": file_id})["url"]
        status, headers, got = files_server.http("GET", url)
        assert status == 200 and got == body
        assert headers["X-Content-Type-Options"] == "nosniff"
        if inline:
            assert headers["Content-Type"] == mime
            assert headers["Content-Disposition"].startswith("inline")
        else:
            assert headers["Content-Type"] == "application/octet-stream"
            assert headers["Content-Disposition"].startswith("attachment")


def test_over_the_size_limit_or_the_quota_is_errno_14_and_nothing_is_stored(
    files_server: FileServer, chat: Chat
) -> None:
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    before = files_server.stored()
    ca.err({"msgid": 33, "name": "huge", "size": BIG + 1, "mime": "video/mp4"}, 14)
    data = payload(BIG, 2)
    for seed in (3, 4):  # 40 MiB of the 45 MiB a day
        upload(files_server, ca, f"f{seed}", payload(BIG, seed), "application/octet-stream")
    stored = files_server.stored()
    started = time.perf_counter()
    ca.err({"msgid": 33, "name": "third", "size": BIG, "mime": "application/zip"}, 14)
    refused_ms = (time.perf_counter() - started) * 1000
    assert files_server.stored() == stored and len(stored) == len(before) + 2
    # Another user keeps service meanwhile.
    started = time.perf_counter()
    upload(files_server, cb, "bobs", data[:MIB], "application/octet-stream")
    print(f"over-quota FILE_UPLOAD refused in {refused_ms:.1f} ms; another user's 1 MiB "
          f"upload meanwhile: {(time.perf_counter() - started) * 1000:.1f} ms")


def test_an_upload_cut_short_leaves_nothing_and_cannot_be_sent(
    files_server: FileServer, chat: Chat
) -> None:
    alice, bob = chat.users(2)
    ca, _ = chat.online_all(alice, bob)
    ack = ca.ok({"msgid": 33, "name": "half", "size": 4 * MIB, "mime": "application/zip"})
    before = files_server.stored()
    with socket.create_connection((HOST, files_server.web_port)) as sock:
        sock.sendall(f"PUT {ack['upload_url']} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {4 * MIB}\r\n\r\n".encode() + b"x" * (2 * MIB))
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while files_server.stored() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files_server.stored() == before
    ca.err({"msgid": 6, "toid": bob.id, "msg": "", "file": ack["file_id"]}, 7)
    # A file that is not one's own cannot be sent either.
    assert files_server.http("PUT", ack["upload_url"], b"y" * (4 * MIB))[0] == 201
    cb = chat.online(bob)
    cb.err({"msgid": 6, "toid": alice.id, "msg": "mine now", "file": ack["file_id"]}, 7)


def test_the_same_bytes_uploaded_twice_are_kept_once(
    files_server: FileServer, chat: Chat
) -> None:
    """Two users upload the same 3 MiB (three batches of the upload's threads): one copy in
    the folder, nothing left in .incoming, each downloads them whole."""
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    data = payload(3 * MIB + 5, 23)
    expected = hashlib.sha256(data).hexdigest()
    before = files_server.stored()
    ids = [upload(files_server, client, "twice.bin", data, "application/octet-stream")
           for client in (ca, cb)]
    added = [p for p in files_server.stored() if p not in before]
    assert [p.name for p in added] == [expected]
    for client, file_id in zip((ca, cb), ids, strict=True):
        url = client.ok({"msgid": 34, "file_id": file_id})["url"]
        status, _, got = files_server.http("GET", url)
        assert status == 200 and hashlib.sha256(got).hexdigest() == expected


def test_many_uploads_at_once_share_the_threads_and_a_quiet_one_goes_through(
    files_server: FileServer, chat: Chat
) -> None:
    """Uploads are hashed and written by a few threads that all of them share (UPLOAD_THREADS):
    8 uploads of 3 MiB at once (more than the threads can take together) and 4 more that stop
    halfway and hang on; each of the 8 is kept whole, the 4 leave nothing, and a 1 MiB upload
    beside them is not held up for long."""
    from concurrent.futures import ThreadPoolExecutor

    from chatserver.adapters.web.files import UPLOAD_THREADS

    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    size = 3 * MIB
    before = files_server.stored()
    grants = [ca.ok({"msgid": 33, "name": f"bulk-{n}", "size": size,
                     "mime": "application/octet-stream"}) for n in range(8)]
    stalled_grants = [cb.ok({"msgid": 33, "name": f"stall-{n}", "size": size,
                             "mime": "application/octet-stream"}) for n in range(4)]
    datas = [payload(size, 100 + n) for n in range(8)]
    stalled = []
    for grant in stalled_grants:
        sock = socket.create_connection((HOST, files_server.web_port))
        sock.sendall(f"PUT {grant['upload_url']} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode() + b"s" * (size // 2))
        stalled.append(sock)
    try:
        with ThreadPoolExecutor(len(grants)) as pool:
            quiet = payload(MIB, 99)
            grant = cc.ok({"msgid": 33, "name": "quiet", "size": MIB, "mime": "text/plain"})
            bulk = [pool.submit(files_server.http, "PUT", g["upload_url"], d)
                    for g, d in zip(grants, datas, strict=True)]
            started = time.perf_counter()  # while the 8 are under way
            status, _, body = files_server.http("PUT", grant["upload_url"], quiet)
            quiet_seconds = time.perf_counter() - started
            unfinished = sum(not f.done() for f in bulk)
            answers = [f.result() for f in bulk]
        assert status == 201, body
        assert [a[0] for a in answers] == [201] * len(grants), answers
        kept = {p.name for p in files_server.stored() if p not in before}
        wanted = {hashlib.sha256(d).hexdigest() for d in [*datas, quiet]}
        print(f"8 uploads of 3 MiB at once and 4 stalled halfway, {UPLOAD_THREADS} threads: "
              f"a 1 MiB upload beside them took {quiet_seconds * 1000:.0f} ms ({unfinished} of "
              f"the 8 still under way when it was done)")
        assert quiet_seconds < 5
    finally:
        for sock in stalled:
            sock.close()
    # The stalled uploads leave nothing once their connections go; the others are all there.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kept = {p.name for p in files_server.stored() if p not in before}
        if kept == wanted:
            break
        time.sleep(0.05)
    assert kept == wanted


def test_a_local_cluster_signs_file_links_with_one_key(tmp_path: Path) -> None:
    """`chatserver cluster --ws-port` (two nodes behind nginx, SQLite and the folder beside
    it): an upload through nginx, and the link one node hands out is good on each node (the
    run's one file key; a key per node refused a link on the other node: HTTP 403)."""
    import shutil

    from tests.integration.conftest import ClusterProcess

    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    cluster = ClusterProcess(tmp_path, tmp_path / "cluster.log", web=True).start()
    assert isinstance(cluster, ClusterProcess) and cluster.ws_port is not None
    chat = Chat(cluster)
    try:
        ca = chat.online(chat.user("a"))
        data = payload(2 * MIB + 1, 5)
        ack = ca.ok({"msgid": 33, "name": "c.bin", "size": len(data),
                     "mime": "application/octet-stream"})
        status, _, body = http_request(cluster.ws_port, "PUT", ack["upload_url"], data)
        assert status == 201, body
        url = ca.ok({"msgid": 34, "file_id": ack["file_id"]})["url"]
        for node in range(cluster.nodes):
            status, _, got = http_request(cluster.node_port + cluster.nodes + node, "GET", url)
            assert status == 200 and got == data, (node, status)
    finally:
        chat.close_all()
        cluster.stop()
        cluster.assert_no_traceback()
