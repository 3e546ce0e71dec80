"""Abuse, performed: each test does what an attacker would (bounded: seconds, loopback) and
shows that a well-behaved user beside it keeps its service, printing that user's latency."""

import json
import os
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, User

pytestmark = pytest.mark.integration

PER_ADDRESS = 512  # the documented default
# The default limits of accounts per address, which the suite's other servers turn off.
REGISTRATION_LIMITS = ["--registrations-per-minute", "10", "--registrations-per-hour", "100"]
FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS = 10


def frames_of(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


def timed_login(port: int, user: User, source: str | None = None) -> float:
    """Seconds for a fresh connection (from the loopback address source, if given) to log
    user in (asserting success)."""
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=15,
                                  source_address=None if source is None else (source, 0)) as sock:
        sock.sendall(json.dumps({"msgid": 1, "id": user.id, "password": user.password}).encode()
                     + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "closed before the login reply"
            data += chunk
    reply = frames_of(data)[0]
    assert reply["msgid"] == 2 and reply["errno"] == 0, reply
    return time.perf_counter() - started


def latency_report(what: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{what}: {len(ordered)} logins, median {ordered[len(ordered) // 2] * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")


@contextmanager
def flood(port: int, connections: int, frame: bytes, *, per_round: int = 5,
          pause: float = 0.0, reconnect: bool = False) -> Iterator[dict[str, int]]:
    """`connections` sockets re-sending `frame` (per_round at a time) and reading whatever comes
    back, from a thread, until the block ends; reconnect: each one closed is opened again (at
    most 50 a round). Yields counts: replies by errno, closed, reconnected."""
    counts: dict[str, int] = {"sent": 0, "replies": 0, "closed": 0, "reconnected": 0}
    socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(connections)]
    stop = threading.Event()

    def run() -> None:
        selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        live = set(socks)
        while not stop.is_set() and (live or reconnect):
            for _ in range(min(50, connections - len(live)) if reconnect else 0):
                try:
                    sock = socket.create_connection((HOST, port), timeout=5)
                except OSError:
                    break
                counts["reconnected"] += 1
                socks.append(sock)
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                live.add(sock)
            for sock in list(live):
                try:
                    sock.send(frame * per_round)
                    counts["sent"] += per_round
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:  # closed by the server
                    counts["closed"] += 1
                    selector.unregister(sock)
                    live.discard(sock)
                    sock.close()
            for key, _ in selector.select(timeout=0.01):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    if sock not in live:
                        continue
                    counts["closed"] += 1
                    selector.unregister(sock)
                    live.discard(sock)
                    sock.close()
                    continue
                for line in data.split(b"\n"):
                    if b'"errno":' in line:
                        counts["replies"] += 1
                        errno = line.split(b'"errno":', 1)[1][:2].rstrip(b",}")
                        key_name = f"errno {errno.decode()}"
                        counts[key_name] = counts.get(key_name, 0) + 1
            if pause:
                time.sleep(pause)
        selector.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(10)
        for sock in socks:
            sock.close()


def test_a_thousand_connections_from_one_address(tmp_path: Path) -> None:
    server = ServerProcess("memory://", tmp_path / "abuse.log").start()
    assert server.port is not None
    chat = Chat(server)
    alice, bob = chat.users(2)  # connected before the flood
    ca, cb = chat.online(alice), chat.online(bob)
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(1000):
            sock = socket.create_connection((HOST, server.port), timeout=5)
            held.append(sock)
        for sock in held[PER_ADDRESS:]:  # the ones over the limit are told, and closed
            data = sock.recv(4096)
            if data and json.loads(data.split(b"\n")[0])["errno"] == 9:
                refused += 1
        assert refused >= 1000 - PER_ADDRESS - 2  # the two users above hold two of the 512
        # Those already in are served as before.
        sent = ca.ok({"msgid": 6, "toid": bob.id, "msg": "still here"})["msg_id"]
        cb.expect({"msgid": 6, "msg_id": sent})
    finally:
        for sock in held:
            sock.close()
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_the_limit_of_waiting_messages_is_set_by_stored_limit(tmp_path: Path) -> None:
    """(changed in version 2) The inbox keeps everything and no sender is refused: the stored
    limit bounds what a login pushes to a device that fell behind (the newest of it); SYNC
    reads the rest."""
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log", ["--stored-limit", "2"]
    ).start()
    chat = Chat(server)
    try:
        alice, bob = chat.users(2)
        ca = chat.online(alice)
        for n in range(3):
            ca.ok({"msgid": 6, "toid": bob.id, "msg": f"waits {n}"})
        cb = chat.client()
        login = cb.login(bob)
        assert [m["msg"] for m in login["offlinemsg"]] == ["waits 1", "waits 2"]
        synced = cb.ok({"msgid": 20, "since": 0})
        assert [m["msg"] for m in synced["msgs"]] == ["waits 0", "waits 1", "waits 2"]
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of process pid's main thread, where the server's event
    loop runs (not its password hash threads) (Linux)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
def test_a_registration_flood_for_a_taken_name_leaves_logins_fast(
    tmp_path: Path, transport: str
) -> None:
    """Issue 16.1: 300 connections re-sending REG for a taken name used to run a full scrypt
    each and push another user's login to 5-8 s. REG requests are now limited per address
    (60 a minute, whatever their outcome) and the name is checked before hashing; that left
    the event loop answering each refused REG, 16,000-20,000 a second, and a login beside them
    took 0.2-1.2 s (median), up to 6.4 s. Now requests refused by a limit count against the
    connection (50, then 1 a second) and against the address (200, then 4 a second, over all
    its connections); past either the connection is cut off, at its next refusal while its
    address floods, and what it sent that was not served yet is dropped. The attacker here
    reconnects as it is cut off, to keep 300 connections flooding. On both TCP drivers."""
    server = ServerProcess(
        "memory://", tmp_path / "reg.log", [*REGISTRATION_LIMITS, "--transport", transport]
    ).start()
    assert server.port is not None and server.proc is not None
    chat = Chat(server)
    elsewhere = "127.0.0.2"  # the bystander's address: not the attacker's
    try:
        taken, bystander = chat.user("taken"), chat.user("bystander")
        quiet = [timed_login(server.port, bystander, elsewhere) for _ in range(5)]
        print(latency_report("before the flood", quiet))
        reg = json.dumps({"msgid": 4, "name": taken.name, "password": "x"}).encode() + b"\n"
        with flood(server.port, 300, reg, per_round=2, pause=0.02, reconnect=True) as counts:
            time.sleep(0.2)
            cpu, started = cpu_seconds(server.proc.pid), time.perf_counter()
            during = [timed_login(server.port, bystander, elsewhere) for _ in range(20)]
            busy = (cpu_seconds(server.proc.pid) - cpu) / (time.perf_counter() - started)
            # The attack's size does not hang on how fast the logins were (when they are, the
            # flood ran under a second and sent fewer than 10,000 frames): at most 10 s more.
            more = time.monotonic() + 10
            while counts["sent"] <= 10_000 and time.monotonic() < more:
                time.sleep(0.05)
        after = [timed_login(server.port, bystander, elsewhere) for _ in range(5)]
        print(latency_report("during 300 connections re-sending REG of a taken name", during))
        print(latency_report("after the flood", after))
        print(f"flood: {counts}; the server's event loop during the logins: {busy:.0%} of a "
              "core")
        assert set(counts) - {"sent", "replies", "closed", "reconnected"} <= {"errno 1",
                                                                              "errno 9"}
        # The attack ran, and was cut off: of what it sent, the server answered the first 60
        # (errno 1), the address's 200 refusals, then one refusal per connection, each cut
        # off at it, the rest dropped (it used to answer every frame: 181,000 of 183,000).
        assert counts["sent"] > 10_000 and counts["reconnected"] > 1_000
        assert counts["replies"] <= counts["reconnected"] + 1_000
        # The event loop is not saturated (it was: 100% of a core answering refusals; now
        # 34-37% on an idle machine, most of it accepting the attacker's new connections)...
        # on the default driver. The anyio driver costs 3-5 times as much per connection
        # (docs/performance.md), so 6,000 reconnections in a few seconds keep its loop busy
        # (69-97% measured); what it must hold is the cut-off above and the latency below.
        if transport == "asyncio":
            assert busy < 0.9
        # ...so what slows a login down is the machine's CPU, shared by the hash threads, the
        # attacker's client and its connections. Idle (quiet login 0.055 s), p99 measured
        # 0.14 s: the 0.5 s holds. Loaded by other work that comes and goes (load 7,
        # the quiet login 0.06 s before one flood and 0.2 s after it) the hash itself took 2-4
        # times longer during the flood (0.35-0.75 s for 0.12-0.17 s) and p99 reached 1.1 s:
        # the bound is the 0.5 s or ten times the quiet login measured before and
        # after in the same run, whichever is larger.
        quiet_median = max(sorted(quiet)[len(quiet) // 2], sorted(after)[len(after) // 2])
        p99 = sorted(during)[int(len(during) * 0.99)]
        assert p99 <= max(0.5, 10 * quiet_median)
        # Each refused REG used to write a log line: 17 MB in 3 s. Now 20 lines a second.
        log_bytes = server.log_size()
        print(f"server log: {log_bytes} bytes")
        assert log_bytes < 300_000
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_one_address_creates_only_so_many_accounts(tmp_path: Path) -> None:
    """Issue 16.1: one address could create 20-40 accounts a second."""
    server = ServerProcess("memory://", tmp_path / "reg.log", REGISTRATION_LIMITS).start()
    chat = Chat(server)
    try:
        results, ids = [], []
        client = chat.client()
        for n in range(15):
            reply = client.request({"msgid": 4, "name": f"bulk-{n}-{time.time_ns()}",
                                    "password": "pw"})
            results.append(reply["errno"])
            ids.append(reply.get("id"))
        assert results == [0] * 10 + [9] * 5
        assert "accounts" in str(client.request({"msgid": 4, "name": "one-more",
                                                 "password": "pw"})["errmsg"])
        # Those who have accounts log in as ever.
        user = User(int(ids[0]), "bulk-0", "pw")
        print(latency_report("login beside it", [timed_login(server.port or 0, user)]))
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
def test_parallel_wrong_passwords_are_checked_no_more_than_the_limit(
    tmp_path: Path, transport: str
) -> None:
    """Issue 16.2: 150 wrong passwords sent at once from one address were all checked (the
    throttle counted failures after hashing). Now each is reserved before hashing."""
    server = ServerProcess("memory://", tmp_path / "guess.log",
                           ["--transport", transport]).start()
    assert server.port is not None
    chat = Chat(server)
    socks: list[socket.socket] = []
    try:
        victim, bystander = chat.user("victim"), chat.user("bystander")
        guess = json.dumps({"msgid": 1, "id": victim.id, "password": "wrong"}).encode() + b"\n"
        socks = [socket.create_connection((HOST, server.port), timeout=15) for _ in range(150)]
        for sock in socks:
            sock.sendall(guess)
        latency = timed_login(server.port, bystander)
        errnos = []
        for sock in socks:
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
            errnos.append(frames_of(data)[0]["errno"])
        print(f"{transport}: errno 1 x{errnos.count(1)}, errno 9 x{errnos.count(9)}; "
              f"bystander's login {latency * 1000:.0f} ms")
        assert errnos.count(1) <= FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS
        assert errnos.count(9) >= 150 - FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS
        assert latency < 2.0  # behind at most ten hashes
    finally:
        for sock in socks:
            sock.close()
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `seconds` pass (False)."""
    data, deadline = b"", time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
@pytest.mark.parametrize("terminator", [b"\n", b"\0"], ids=["modern", "legacy"])
def test_a_flood_of_malformed_frames_is_charged_and_cut_off(
    tmp_path: Path, transport: str, terminator: bytes
) -> None:
    """Issue 16.4: 20,000 `{"msgid":99}` got 20,000 errno 7 replies and no disconnect; in the
    legacy dialect nothing was answered and nothing pushed back; the anyio transport let
    4,839 refused requests through before closing. Now each bad frame is charged: a burst of
    200 is answered (errno 7), then errno 9, and 200 refusals later the connection closes."""
    server = ServerProcess("memory://", tmp_path / "bad.log", ["--transport", transport]).start()
    assert server.port is not None
    chat = Chat(server)
    try:
        bystander = chat.online(chat.user("bystander"))
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            try:
                sock.sendall(b'{"msgid":99}' + terminator)  # the dialect is set by the first
                sock.sendall((b'{"msgid":99}' + terminator) * 20_000)
            except OSError:
                pass  # closed while sending: that is the point
            data, closed = read_until_closed(sock, 10)
        errnos = [f["errno"] for f in frames_of(data)]
        print(f"{transport} {terminator!r}: errno 7 x{errnos.count(7)}, errno 9 "
              f"x{errnos.count(9)}, closed {closed}")
        assert closed
        if terminator == b"\n":
            assert 200 <= errnos.count(7) <= 260  # the burst, and what refilled meanwhile
            assert 190 <= errnos.count(9) <= 202
        else:
            assert errnos == []  # the legacy dialect answers no malformed frame
        started = time.perf_counter()
        bystander.ok({"msgid": 16})
        print(f"bystander's PING: {(time.perf_counter() - started) * 1000:.1f} ms")
        assert "still flooding" in server.log_text()
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_32_connections_flooding_bad_frames_leave_a_bystander_served(tmp_path: Path) -> None:
    """Issue 16.4: a bystander's PING went from 1 ms to 1.2 s with 32 connections sending
    malformed frames. Now they are cut off like any flood."""
    server = ServerProcess("memory://", tmp_path / "bad.log").start()
    assert server.port is not None
    chat = Chat(server)
    try:
        bystander = chat.online(chat.user("bystander"))
        latencies = []
        with flood(server.port, 32, b'{"msgid":99}\n', per_round=50) as counts:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.perf_counter()
                bystander.ok({"msgid": 16})
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
        ordered = sorted(latencies)
        p99 = ordered[int(len(ordered) * 0.99)]
        print(f"bystander's PING during the flood: {len(ordered)} PINGs, median "
              f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {counts}")
        assert counts["closed"] == 32
        assert counts.get("errno 7", 0) <= 32 * 300
        assert p99 < 0.5
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


@pytest.mark.parametrize("transport", ["asyncio", "anyio"])
def test_a_flood_read_in_one_go_is_cut_off_after_the_same_refusals_on_both_transports(
    tmp_path: Path, transport: str
) -> None:
    """Issue 16.4: the anyio transport served a whole read (thousands of frames) before it
    looked at the refusals, and let 4,839 refused requests through instead of 200."""
    server = ServerProcess("memory://", tmp_path / "ping.log", ["--transport", transport]).start()
    assert server.port is not None
    try:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            with suppress(OSError):
                sock.sendall(b'{"msgid":16}\n' * 20_000)
            data, closed = read_until_closed(sock, 10)
        errnos = [f["errno"] for f in frames_of(data)]
        print(f"{transport}: errno 0 x{errnos.count(0)}, errno 9 x{errnos.count(9)}")
        assert closed and 190 <= errnos.count(9) <= 202
    finally:
        server.stop()
        server.assert_no_traceback()


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_idle_connections_to_the_metrics_port_make_no_threads(tmp_path: Path) -> None:
    """Issue 16.8: the metrics endpoint had a thread per connection, no timeout, no cap, on the
    chat's --host: 3,000 idle connections made 2,994 threads and a chat PING took 6.2 s."""
    from tests.integration.conftest import free_port
    from tests.integration.test_metrics import scrape

    metrics_port = free_port()
    server = ServerProcess("memory://", tmp_path / "metrics.log",
                           ["--metrics-port", str(metrics_port)]).start()
    assert server.port is not None and server.proc is not None
    chat = Chat(server)
    held: list[socket.socket] = []
    try:
        bystander = chat.online(chat.user("bystander"))
        threads_before = threads_of(server.proc.pid)
        for _ in range(3000):
            try:
                held.append(socket.create_connection((HOST, metrics_port), timeout=5))
            except OSError:
                break  # refused: fine too
        time.sleep(0.5)
        threads_during = threads_of(server.proc.pid)
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            bystander.ok({"msgid": 16})
            latencies.append(time.perf_counter() - started)
        print(f"{len(held)} idle metrics connections: server threads {threads_before} -> "
              f"{threads_during}; bystander's PING max {max(latencies) * 1000:.1f} ms")
        assert threads_during <= threads_before + 2
        assert max(latencies) < 0.5
        # The idle ones are closed: at once over the cap, after 5 s below it; then a scrape
        # is served.
        time.sleep(5.5)
        for sock in held:
            sock.close()
        held.clear()
        assert "chatserver_sessions_online" in scrape(metrics_port)
        assert f"metrics at http://127.0.0.1:{metrics_port}/metrics" in server.log_text()
    finally:
        for sock in held:
            sock.close()
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_names_that_pose_as_another_user_are_refused(chat: Chat) -> None:
    """Issue 16.10: the NFD form of a name, a trailing space or zero-width space, a name
    reversed behind U+202E, invisible-only names, ESC, newline and NUL all registered."""
    victim = chat.user("victim")
    c = chat.client()
    posers = [
        victim.name + " ", victim.name + "\u200b", "\u202e" + victim.name[::-1],
        "\u200b\u200b", "\u3164", "ev\x1bil", "ev\nil", "ev\x00il", "Jose\u0301",
    ]
    for name in posers:
        reply = c.request({"msgid": 4, "name": name, "password": "pw"})
        assert reply["errno"] == 7, (name, reply)
    started = time.perf_counter()
    assert c.request({"msgid": 4, "name": f"José {victim.id}", "password": "pw"})["errno"] == 0
    print(f"an ordinary name beside them registers in {time.perf_counter() - started:.3f} s")


def closed_soon(socks: list[socket.socket], seconds: float) -> int:
    """How many of socks the server closes within seconds (they send nothing)."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(closed) < len(socks):
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed.add(sock)
                selector.unregister(sock)
    selector.close()
    return len(closed)


@pytest.mark.parametrize("kind", ["tls", "tls-anyio", "websocket"])
def test_connections_that_never_finish_their_handshake_count_against_the_address(
    tmp_path: Path, kind: str
) -> None:
    """Issue 16.9: connections in the TLS handshake (30 s) or the WebSocket handshake (10 s)
    were not counted: 600 of 600 were held from one client. Now they count from the moment
    they are accepted: past the limit they are closed at once."""
    from tests.integration.conftest import free_port

    limit = 50
    args = ["--connections-per-address", str(limit)]
    ws_port = free_port()
    if kind == "tls-anyio":
        args += ["--transport", "anyio"]
    if kind.startswith("tls"):
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        import subprocess

        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, timeout=60)
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    else:
        args += ["--ws-port", str(ws_port)]
    server = ServerProcess("memory://", tmp_path / "pending.log", args).start()
    assert server.port is not None
    port = ws_port if kind == "websocket" else server.port
    time.sleep(0.3)  # the start-up probes are counted until the server sees them close
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(200)]
        closed = closed_soon(socks, 2.0)
        told = 8 if kind == "websocket" else 0  # let through to be told errno 9
        print(f"{kind}: 200 silent connections, {closed} closed within 2 s")
        assert closed >= 200 - limit - told
        # Another address is served meanwhile.
        started = time.perf_counter()
        with socket.create_connection((HOST, port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as other:
            if kind.startswith("tls"):
                import ssl

                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                with context.wrap_socket(other) as tls:
                    tls.sendall(b'{"msgid":16}\n')
                    assert b'"errno":0' in tls.recv(4096)
            else:
                from websockets.sync.client import connect

                with connect(f"ws://{HOST}:{port}/ws", sock=other, open_timeout=5) as ws:
                    ws.send('{"msgid":16}')
                    assert '"errno":0' in str(ws.recv(timeout=5))
        print(f"another address's PING: {(time.perf_counter() - started) * 1000:.1f} ms")
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        server.assert_no_traceback()


def proxy_v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 6000\r\n".encode()


def test_a_registration_flood_from_many_addresses_does_not_delay_logins(tmp_path: Path) -> None:
    """Issue 16.1: REG and LOGIN shared two hash threads first come, first served, so a flood
    of registrations (each within its address's limits: here 300 addresses, named by PROXY
    headers from the trusted loopback) delayed every login by seconds. Logins now go first in
    a fair queue: a login waits for at most the hashes in progress."""
    server = ServerProcess("memory://", tmp_path / "regs.log",
                           [*REGISTRATION_LIMITS, "--proxy-protocol"]).start()
    assert server.port is not None
    socks: list[socket.socket] = []

    def login_latency(user_id: int, source: str) -> float:
        started = time.perf_counter()
        with socket.create_connection((HOST, server.port or 0), timeout=30) as sock:
            sock.sendall(proxy_v1(source) + json.dumps(
                {"msgid": 1, "id": user_id, "password": "pw"}).encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
        assert frames_of(data)[0]["errno"] == 0
        return time.perf_counter() - started

    try:
        with socket.create_connection((HOST, server.port), timeout=15) as sock:
            sock.sendall(proxy_v1("192.0.2.1") + b'{"msgid":4,"name":"bystander","password":"pw"}'
                         b"\n")
            bystander = int(frames_of(sock.recv(4096))[0]["id"])  # type: ignore[arg-type]
        quiet = [login_latency(bystander, "192.0.2.1") for _ in range(3)]
        stamp = time.time_ns()
        for n in range(300):
            sock = socket.create_connection((HOST, server.port), timeout=30)
            sock.sendall(proxy_v1(f"10.{n // 250}.{n % 250}.1") + json.dumps(
                {"msgid": 4, "name": f"flood-{stamp}-{n}", "password": "pw"}).encode() + b"\n")
            socks.append(sock)
        time.sleep(0.5)
        during = [login_latency(bystander, "192.0.2.1") for _ in range(10)]
        print(latency_report("quiet", quiet))
        print(latency_report("during 300 registrations from 300 addresses", during))
        errnos: list[object] = []
        for sock in socks:
            sock.setblocking(False)
            with suppress(BlockingIOError):
                errnos.append(frames_of(sock.recv(4096))[0]["errno"])
        print(f"registrations answered by the end of the logins: {errnos.count(0)} accounts, "
              f"{errnos.count(11)} errno 11 (too many waiting), {300 - len(errnos)} not yet")
        assert len(errnos) < 300  # the flood was still being hashed while the logins were served
        assert sorted(during)[len(during) // 2] <= 0.5 and max(during) <= 1.5
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        server.assert_no_traceback()


def test_a_stranger_cannot_lock_the_owner_out(tmp_path: Path) -> None:
    """Issue 16.7: ten wrong passwords to a user id (ids are sequential) and the owner's right
    password got errno 9 for a minute. Failures now count per (account, address) and per
    address; the owner, from another address, logs in."""
    server = ServerProcess("memory://", tmp_path / "lockout.log", ["--proxy-protocol"]).start()
    assert server.port is not None

    def session(source: str) -> socket.socket:
        sock = socket.create_connection((HOST, server.port or 0), timeout=15)
        sock.sendall(proxy_v1(source))
        return sock

    def ask(sock: socket.socket, frame: dict[str, object]) -> dict[str, object]:
        sock.sendall(json.dumps(frame).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        return frames_of(data)[0]

    try:
        with session("192.0.2.9") as owner_sock:
            owner = ask(owner_sock, {"msgid": 4, "name": "owner", "password": "right"})["id"]
        with session("198.51.100.1") as attacker:
            errnos = [ask(attacker, {"msgid": 1, "id": owner, "password": f"guess{n}"})["errno"]
                      for n in range(15)]
            assert errnos == [1] * FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS + [9] * 5
            # Even the right password is refused from the guessing address.
            assert ask(attacker, {"msgid": 1, "id": owner, "password": "right"})["errno"] == 9
        with session("192.0.2.9") as owner_sock:
            started = time.perf_counter()
            reply = ask(owner_sock, {"msgid": 1, "id": owner, "password": "right"})
            print(f"the owner's login after the guessing: errno {reply['errno']}, "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms")
            assert reply["errno"] == 0
    finally:
        server.stop()
        server.assert_no_traceback()


def test_a_whole_script_look_alike_of_a_taken_name_is_refused(chat: Chat) -> None:
    """Issue 16.10: a name in Cyrillic (or Greek) look-alikes of every letter of a taken Latin
    name registered: one script, so the mixed-script rule let it in. Names are now keyed by
    their TR 39 skeleton; the victim, online meanwhile, is served as before."""
    stamp = uuid.uuid4().int % 10**8
    latin, cyrillic = f"scope {stamp}", f"\u0455\u0441\u043e\u0440\u0435 {stamp}"  # ѕсоре
    greek_latin, greek = f"opa {stamp}", f"\u03bf\u03c1\u03b1 {stamp}"  # ορα
    victim = chat.register(latin, "pw")
    client = chat.online(User(victim, latin, "pw"))
    attacker = chat.client()
    reply = attacker.request({"msgid": 4, "name": cyrillic, "password": "pw"})
    assert reply["errno"] == 1 and reply["errmsg"] == "name already taken", reply
    # Whichever comes first holds the name: the Greek one first, then the Latin one.
    assert attacker.request({"msgid": 4, "name": greek, "password": "pw"})["errno"] == 0
    assert attacker.request({"msgid": 4, "name": greek_latin, "password": "pw"})["errno"] == 1
    # Names that only share letters are not look-alikes.
    assert attacker.request({"msgid": 4, "name": f"scopes {stamp}", "password": "pw"}
                            )["errno"] == 0
    started = time.perf_counter()
    assert client.request({"msgid": 16})["errno"] == 0
    print(f"the victim's PING beside it: {(time.perf_counter() - started) * 1000:.1f} ms")


def test_one_user_creates_only_so_many_groups(chat: Chat) -> None:
    """Issue 16.12: CREATE_GROUP was unlimited. 20 groups a user an hour, 500 in all."""
    spammer = chat.online(chat.user("spammer"))
    stamp = time.time_ns()
    errnos = [spammer.request({"msgid": 8, "groupname": f"spam-{stamp}-{n}",
                               "groupdesc": ""})["errno"] for n in range(25)]
    assert errnos == [0] * 20 + [9] * 5
    other = chat.online(chat.user("other"))
    started = time.perf_counter()
    other.ok({"msgid": 8, "groupname": f"mine-{stamp}", "groupdesc": ""})
    print(f"another user's CREATE_GROUP: {(time.perf_counter() - started) * 1000:.1f} ms")


def test_strangers_flooding_a_receipting_user_do_not_disconnect_them(chat: Chat) -> None:
    """Issue 16.5: ten accounts, each within its own budget, sent more at once than the
    unreceipted bound (1,000) to a user who receipts everything at once: the bound ended the
    victim's session, again and again. Now what exceeds it waits for the receipts."""
    victim, bystander, *flooders = chat.users(12)
    target = chat.online(victim, receipts=True)
    beside = chat.online(bystander)
    senders = [chat.online(user) for user in flooders]
    for sender in senders:  # 150 each, within a connection's burst of 200: 1,500 in all
        for n in range(150):
            sender.send({"msgid": 6, "toid": victim.id, "msg": f"flood {n}"})
    positions: list[int] = []
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    while len(positions) < 1500 and time.monotonic() < deadline:
        chats = [f for f in target.drain(0.1) if f.get("msgid") == 6]
        if chats:
            positions += [f["pos"] for f in chats]
            target.send({"msgid": 19, "msg_ids": [f["msg_id"] for f in chats]})
        started = time.monotonic()
        beside.ok({"msgid": 16})
        latencies.append(time.monotonic() - started)
    print(f"victim got {len(positions)} of 1500; a bystander's PING: median "
          f"{sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, max "
          f"{max(latencies) * 1000:.1f} ms over {len(latencies)}")
    assert positions == list(range(1, 1501))  # all of it, in order, once
    target.ok({"msgid": 16})  # and still connected
    assert max(latencies) < 2.0


def test_names_that_differ_only_in_case_form_or_script_are_refused_for_users_and_groups(
    chat: Chat,
) -> None:
    """Issue 16.10, the rest: a case variant of a user's or group's name is taken (errno 1); a
    Cyrillic look-alike, a full-width or NFD copy, and the names of the issue's list are refused
    (errno 7) as group names too, when created and when renamed. None of them can then log in
    or be found, so nothing a page shows can pass for the victim."""
    victim = chat.user("Victim")
    owner = chat.online(chat.user("owner"))
    group_name = f"Club{victim.id}"
    club = owner.ok({"msgid": 8, "groupname": group_name})
    other = owner.ok({"msgid": 8, "groupname": f"other{victim.id}"})
    spoofs = {
        "case": [victim.name.upper(), victim.name.lower()],
        "form": [
            victim.name.replace("V", "\uff36"),  # full-width V
            victim.name.replace("V", "\u2164"),  # Roman numeral five
        ],
        "look-alike": [victim.name.replace("i", "\u0456"), victim.name.replace("c", "\u0441")],
        "hidden": [
            victim.name + " ", victim.name + "\u200b", "\u202e" + victim.name[::-1],
            "\u200b\u200b", "\u3164", "ev\x1bil", "ev\nil", "ev\x00il",
        ],
    }
    c = chat.client()
    started = time.perf_counter()
    tried = 0
    for kind, names in spoofs.items():
        for name in names:
            expected = 1 if kind == "case" else 7
            reply = c.request({"msgid": 4, "name": name, "password": "pw"})
            assert reply["errno"] == expected, (kind, name, reply)
            login = c.request({"msgid": 1, "name": name, "password": "pw"})
            assert login["errno"] == 1, (kind, name, login)
            group_spoof = name.replace(victim.name, group_name) if victim.name in name else name
            if kind == "case":
                group_spoof = group_name.upper()
            for request in (
                {"msgid": 8, "groupname": group_spoof},
                {"msgid": 28, "groupid": other["groupid"], "groupname": group_spoof},
            ):
                reply = owner.request(request)
                assert reply["errno"] == expected, (kind, group_spoof, request, reply)
            tried += 1
    elapsed = time.perf_counter() - started
    # The victim and the group are untouched: the victim logs in under their own name.
    me = chat.online(victim)
    assert me.ack["name"] == victim.name
    latency = time.perf_counter()
    me.ok({"msgid": 16})
    print(f"{tried} spoofed names refused as users and groups in {elapsed:.2f} s; "
          f"the victim's PING {1000 * (time.perf_counter() - latency):.1f} ms; "
          f"group {club['groupid']} untouched")


def test_strangers_cannot_fill_an_away_users_inbox_and_a_friends_message_still_arrives(
    tmp_path: Path,
) -> None:
    """Issue 16.6: 25 stranger accounts stored 10,000 messages for an away user in 6 s, and then
    the user's friends got errno 11. Now strangers get errno 9 or 14 past the share, and the
    friend's message is kept and delivered at the next login."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log").start()
    chat = Chat(server)
    try:
        victim, friend, *strangers = chat.users(27, "flood")
        cv, cf = chat.online(victim), chat.online(friend)
        chat.befriend(cf, cv)
        cv.close()
        per_stranger = 150  # within one connection's burst: only the stranger limits refuse
        counts: dict[int, int] = {}
        closed: list[int] = []
        lock = threading.Lock()

        def flood_from(user: User) -> None:
            frames = [{"msgid": 1, "id": user.id, "password": user.password, "seq": 0}]
            frames += [{"msgid": 6, "toid": victim.id, "msg": f"spam {n}", "seq": n + 1}
                       for n in range(per_stranger)]
            with socket.create_connection((HOST, server.port or 0), timeout=30) as sock:
                with suppress(ConnectionResetError, BrokenPipeError):
                    sock.sendall(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
                data = b""
                while data.count(b"\n") < len(frames):
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:  # cut off for flooding: past the refusals it was allowed
                        closed.append(user.id)
                        break
                    data += chunk
            replies = frames_of(data)[1:]
            with lock:
                for reply in replies:
                    errno = int(reply["errno"])  # type: ignore[call-overload]
                    counts[errno] = counts.get(errno, 0) + 1

        started = time.perf_counter()
        threads = [threading.Thread(target=flood_from, args=(u,)) for u in strangers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flood_seconds = time.perf_counter() - started
        sent = time.perf_counter()
        kept = cf.ok({"msgid": 6, "toid": victim.id, "msg": "are you there?"})
        friend_ms = (time.perf_counter() - sent) * 1000
        back = chat.client()
        login = back.login(victim)
        waiting = list(login["offlinemsg"])
        waiting += back.drain(1.0)
        texts = [m.get("msg") for m in waiting if m.get("msgid") == 6]
        print(f"25 strangers x {per_stranger} in {flood_seconds:.2f} s: replies by errno "
              f"{dict(sorted(counts.items()))}, {len(closed)} cut off; the friend's message "
              f"kept in {friend_ms:.1f} ms (msg_id {kept['msg_id']}); {len(texts)} chats "
              "waiting at login")
        assert counts.get(0, 0) <= 1000 + 25  # the share, and what was in flight
        assert set(counts) <= {0, 9, 14}
        # What was not taken was refused (errno 9 past the rate, 14 past the share), until
        # the strangers' address had been refused 200 times: from then on each of them was
        # cut off at its next refusal (issue 16.1), the rest of what it sent dropped.
        refused = counts.get(14, 0) + counts.get(9, 0)
        assert refused + counts.get(0, 0) == 25 * per_stranger or (
            closed and refused >= 200 and "from an address that is flooding" in server.log_text())
        assert texts[-1] == "are you there?"
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()
