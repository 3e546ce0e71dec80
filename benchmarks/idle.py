"""`idle`: N logged-in idle connections on one node: the server's memory per connection, its
CPU while they idle, and chat latency among a few pairs paced at a steady rate meanwhile."""

import argparse
import asyncio
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import loadgen, report, servers
from benchmarks.chat import TS_DIGITS, on_frames
from benchmarks.common import Common, finish_server, no_gc, padding, run_loop, server_info
from benchmarks.loadgen import Client, now_ns
from benchmarks.measure import Meter, latency_summary, limit_of, per_unit, wait_quiet

CHEAP_HASH_COST = 2  # scrypt n for seeded users: a login then costs no real hash
CHAT_WINDOW_CAP = 8  # a paced sender skips its tick while this many are in flight
TARGET_TOTAL_MB = 250.0
TARGET_KB_PER_CONNECTION = 25.0
TARGET_P99_MS = 10.0
SEED_TIMEOUT_SECONDS = 600

COLUMNS: list[report.Column] = [
    ("connections", "connections", "{:,}"),
    ("setup s", "setup_seconds", "{:.1f}"),
    ("RSS before MiB", "rss_before_mib", "{:.1f}"),
    ("RSS idle MiB", "rss_idle_mib", "{:.1f}"),
    ("KiB/conn", "kib_per_connection", "{:.1f}"),
    ("peak RSS MiB", "server_peak_rss_mib", "{:.1f}"),
    ("idle srv %core", "idle.server_core_pct", "{:.1f}"),
    ("chat msg/s", "chat.delivered_per_s", "{:,.0f}"),
    ("acked", "chat.acked", "{:,}"),
    ("received", "chat.received", "{:,}"),
    ("loss", "chat.loss", "{:,}"),
    ("p50 ms", "chat.latency.p50_ms", "{:.2f}"),
    ("p99 ms", "chat.latency.p99_ms", "{:.2f}"),
    ("max ms", "chat.latency.max_ms", "{:.1f}"),
    ("srv µs/msg", "chat.server_us_per_unit", "{:.1f}"),
    ("loadgen %core", "chat.loadgen_core_pct", "{:.0f}"),
    ("other %core", "chat.other_core_pct", "{:.0f}"),
    ("lost conns", "lost_connections", "{:,}"),
    ("stop s", "stop_seconds", "{:.1f}"),
]


_SEED_CODE = """
import json, sys
import anyio
from chatserver.application.commands import Register
from chatserver.entrypoints.bootstrap import Config, bootstrap

async def main():
    path, cost, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    names = json.load(sys.stdin)
    async with bootstrap(Config(database="sqlite:///" + path, hash_cost=cost)) as app:
        client = app.connect()
        return [(await client.request(Register(name, password))).user_id for name in names]

print(json.dumps(anyio.run(main)))
"""


def seed_sqlite(path: Path, user_names: list[str]) -> list[int]:
    """Register users straight into a SQLite database through chatserver's own bootstrap()
    and use cases, with a cheap scrypt cost (stored in each hash, so the server verifies at
    that cost whatever its own). Runs in the measured checkout, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", _SEED_CODE, str(path), str(CHEAP_HASH_COST), loadgen.PASSWORD],
        input=json.dumps(user_names), capture_output=True, text=True,
        cwd=servers.CHATSERVER_DIR, timeout=SEED_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"seeding {path} failed:\n{done.stderr[-3000:]}")
    ids: list[int] = json.loads(done.stdout)
    return ids


async def _paced(client: Client, interval: float, end: float) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + random.uniform(0, interval)
    while due < end:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if client.inflight < CHAT_WINDOW_CAP and client.transport is not None:
            client.transport.write(client.frame_head + b"%020d" % now_ns() + client.frame_tail)
            client.inflight += 1
            client.sent += 1
        due += interval


PING = b'{"msgid":16}\n'
PING_TICK_SECONDS = 0.1


async def ping_forever(clients: list[Client], every: float) -> None:
    """Each client PINGs once per ``every`` seconds (as real clients do, so the server's idle
    timeout spares them), spread evenly; cancelled when the scenario ends."""
    if not clients:
        return
    per_tick = max(1, math.ceil(len(clients) * PING_TICK_SECONDS / every))
    start = 0
    while True:
        for client in clients[start : start + per_tick]:
            if client.transport is not None and not client.lost:
                client.transport.write(PING)
        start = (start + per_tick) % len(clients)
        await asyncio.sleep(PING_TICK_SECONDS)


async def chat_phase(server: servers.ServerProcess, chatters: list[Client],
                     args: argparse.Namespace, common: Common) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    tail = padding(common.msg_bytes, TS_DIGITS) + b'"}\n'
    for a, b in zip(chatters[0::2], chatters[1::2], strict=True):
        a.partner, b.partner = b, a
        a.frame_head = b'{"msgid":6,"toid":%d,"msg":"' % b.user_id
        b.frame_head = b'{"msgid":6,"toid":%d,"msg":"' % a.user_id
        a.frame_tail = b.frame_tail = tail
    for client in chatters:
        client.reset_counters()
        client.sending = False  # paced: a delivery does not trigger the next send
        client.latencies = latencies
        client.on_frames = on_frames
        client.state = now_ns()  # messages sent before this are not this phase's
    quiet = await wait_quiet(server, common.wait_quiet)
    meter = Meter(server)
    with no_gc():
        meter.start()
        end = loop.time() + args.duration
        await asyncio.gather(*(_paced(c, 1.0 / args.rate, end) for c in chatters))
        deadline = loop.time() + common.drain
        while loop.time() < deadline:
            if all(c.inflight == 0 and c.acked + c.errors >= c.sent for c in chatters):
                break
            await asyncio.sleep(0.002)
        measured = meter.stop()
    for client in chatters:
        client.on_frames = None
    acked = sum(c.acked for c in chatters)
    received = sum(c.received for c in chatters)
    row: dict[str, Any] = {
        "pairs": len(chatters) // 2,
        "rate_per_sender": args.rate,
        "load_seconds": args.duration,
        "sent": sum(c.sent for c in chatters),
        "acked": acked,
        "received": received,
        "errors": sum(c.errors for c in chatters),
        "errors_by_errno": loadgen.errnos_of(chatters),
        "loss": acked - received,
        "delivered_per_s": round(received / args.duration, 1),
        "latency": latency_summary(latencies),
        **measured,
        "other_core_pct_before": round(100 * quiet),
    }
    per_unit(row, received, "delivered message")
    row["limit"] = limit_of(row)
    return row


def run_idle(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> dict[str, Any]:
    total = args.connections + 2 * args.pairs
    user_names = loadgen.names(common.prefix("i"), total)
    workdir: Path | None = None
    user_ids: list[int] | None = None
    database = common.database
    seed_seconds = 0.0
    if args.seed == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="chatbench-",
                                        dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        database = f"sqlite:///{workdir / 'idle.db'}"
        started = time.perf_counter()
        try:
            user_ids = seed_sqlite(workdir / "idle.db", user_names)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        seed_seconds = time.perf_counter() - started
        print(f"  seeded {total:,} users into {database} (scrypt n={CHEAP_HASH_COST}) in "
              f"{seed_seconds:.1f} s", flush=True)
    elif database == "memory://" and total > 500:
        print(f"  note: registering {total:,} users through the server at the default hash "
              f"cost takes about {total * 0.09:.0f} s", flush=True)
    try:
        server = servers.start_chatserver(
            database, common.log_path("idle", "chatserver"), extra=extra)
        info = server_info(server)
        result: dict[str, Any] = {"connections": total, "seed": args.seed,
                                  "ping_every_seconds": args.ping_every,
                                  "database": database, "seed_seconds": round(seed_seconds, 1)}

        async def main() -> None:
            await asyncio.sleep(1.0)
            result["rss_before_mib"] = round(server.rss_kib() / 1024, 1)
            started = time.perf_counter()
            meter = Meter(server)
            meter.start()
            clients = await loadgen.open_logged_in(
                server.host, server.port, user_names, user_ids, common.concurrency)
            setup = meter.stop()
            result["setup_seconds"] = round(time.perf_counter() - started, 1)
            result["setup"] = setup
            per_login = setup["server_cpu_total_seconds"] / total
            print(f"  {total:,} connections logged in in {result['setup_seconds']} s "
                  f"({1e6 * per_login:.0f} µs server CPU per login)", flush=True)
            idle_clients = clients[2 * args.pairs :]
            pinger = (asyncio.create_task(ping_forever(idle_clients, args.ping_every))
                      if args.ping_every > 0 else None)
            try:
                await asyncio.sleep(2.0)
                rss = server.rss_kib()
                result["rss_idle_mib"] = round(rss / 1024, 1)
                result["kib_per_connection"] = round(
                    (rss - result["rss_before_mib"] * 1024) / total, 2)
                meter = Meter(server)
                meter.start()
                await asyncio.sleep(args.idle_seconds)
                result["idle"] = meter.stop()
                print(f"  idle: RSS {result['rss_idle_mib']} MiB, "
                      f"{result['kib_per_connection']} KiB per connection, server "
                      f"{result['idle']['server_core_pct']}% of a core", flush=True)
                result["chat"] = await chat_phase(server, clients[: 2 * args.pairs], args,
                                                  common)
                result["server_peak_rss_mib"] = round(server.peak_rss_kib() / 1024, 1)
                result["rss_end_mib"] = round(server.rss_kib() / 1024, 1)
                result["lost_connections"] = sum(c.lost for c in clients)
                result["pongs_and_pushes"] = sum(c.pushes for c in idle_clients)
                # Stop the server with everyone still connected: it logs them all out.
                await asyncio.get_running_loop().run_in_executor(None, server.stop)
                result["stop_seconds"] = server.stop_seconds
            finally:
                if pinger is not None:
                    pinger.cancel()
                for client in clients:
                    client.close()
                await asyncio.sleep(0.5)

        try:
            run_loop(main, use_uvloop=common.uvloop)
        finally:
            finish_server(server, info)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    ping = f"the others PING every {args.ping_every:g} s" if args.ping_every > 0 else "no PINGs"
    print(f"\nidle: {total:,} logged-in connections ({2 * args.pairs} of them chatting, "
          f"{args.rate:g} msg/s per sender for {args.duration:g} s; {ping}), "
          f"database {database}")
    print(report.table([result], COLUMNS))
    chat = result.get("chat", {})
    p99 = (chat.get("latency") or {}).get("p99_ms")
    peak = result.get("server_peak_rss_mib")
    per_conn = result.get("kib_per_connection")
    targets = [
        {"target": f"idle: {total:,} sessions in <= {TARGET_TOTAL_MB:.0f} MB RSS (peak)",
         "measured": peak,
         # The target is for 10,000: fewer connections say nothing about it.
         "met": None if total < 10_000 or peak is None else peak * 1.048576 <= TARGET_TOTAL_MB},
        {"target": f"idle: <= {TARGET_KB_PER_CONNECTION:.0f} KB per connection",
         "measured": per_conn,
         "met": per_conn is not None and per_conn * 1.024 <= TARGET_KB_PER_CONNECTION},
        {"target": f"idle: p99 chat latency <= {TARGET_P99_MS:.0f} ms", "measured": p99,
         "met": p99 is not None and p99 <= TARGET_P99_MS},
        {"target": "idle: 0 loss", "measured": chat.get("loss"), "met": chat.get("loss") == 0},
        {"target": "idle: every idle connection still open at the end",
         "measured": result.get("lost_connections"),
         "met": result.get("lost_connections") == 0},
    ]
    from benchmarks.scenarios import _options, print_targets

    print_targets(targets)
    return {"scenario": "idle", "options": _options(args), "servers": [info],
            "summary": [result], "targets": targets}
