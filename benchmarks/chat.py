"""`direct` and `echo-baseline`: N pairs on one node, each connection sending ONE_CHAT to its
partner with W messages in flight (a message is in flight until the partner receives it)."""

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from benchmarks import loadgen, report, servers
from benchmarks.common import Common, finish_server, no_gc, padding, run_loop, server_info
from benchmarks.loadgen import Client, loads, now_ns
from benchmarks.measure import Meter, latency_summary, limit_of, median_of, per_unit, wait_quiet

TS_DIGITS = 20

CHAT_COLUMNS: list[report.Column] = [
    ("server", "label", "{}"),
    ("W", "window", "{}"),
    ("delivered/s", "delivered_per_s", "{:,.0f}"),
    ("acked", "acked", "{:,.0f}"),
    ("received", "received", "{:,.0f}"),
    ("loss", "loss", "{:,.0f}"),
    ("p50 ms", "latency.p50_ms", "{:.2f}"),
    ("p99 ms", "latency.p99_ms", "{:.2f}"),
    ("max ms", "latency.max_ms", "{:.1f}"),
    ("srv CPU s", "server_cpu_total_seconds", "{:.2f}"),
    ("srv µs/msg", "server_us_per_unit", "{:.2f}"),
    ("× base", "ratio_to_baseline", "{:.2f}"),
    ("srv %core", "server_core_pct", "{:.0f}"),
    ("srv peak RSS MiB", "server_peak_rss_mib", "{:.1f}"),
    ("loadgen CPU s", "loadgen_cpu_seconds", "{:.2f}"),
    ("loadgen µs/msg", "loadgen_us_per_unit", "{:.2f}"),
    ("loadgen %core", "loadgen_core_pct", "{:.0f}"),
    ("other %core", "other_core_pct", "{:.0f}"),
    ("limit", "limit", "{}"),
]
MEDIAN_KEYS = [
    "delivered_per_s", "sent", "acked", "received", "loss", "errors",
    "latency.p50_ms", "latency.p99_ms", "latency.max_ms",
    "server_cpu_total_seconds", "server_us_per_unit", "server_core_pct",
    "server_peak_rss_mib", "loadgen_cpu_seconds", "loadgen_us_per_unit", "loadgen_core_pct",
    "other_core_pct", "other_core_pct_before",
    "wall_seconds",
]


@dataclass
class PairsOptions:
    common: Common
    pairs: int = 100
    windows: list[int] = field(default_factory=lambda: [1, 8])
    duration: float = 10.0
    friends: bool = False  # partners befriend each other before the load


def send_window(client: Client) -> None:
    """Top the sender's window up: one write carries every frame it may send now."""
    room = client.window - client.inflight
    if room <= 0 or client.transport is None:
        return
    frame = client.frame_head + b"%020d" % now_ns() + client.frame_tail
    client.transport.write(frame * room if room > 1 else frame)
    client.inflight += room
    client.sent += room


def on_frames(client: Client, frames: list[bytes]) -> None:
    """A read batch of one connection in a measured phase: ACKs of its own messages and
    messages from its partner, each of which frees a slot in the partner's window."""
    now = now_ns()
    arrived = 0
    latencies = client.latencies
    assert latencies is not None
    for frame in frames:
        if not frame:
            continue
        obj = loads(frame)
        msgid = obj["msgid"]
        if msgid == 6:
            sent_at = int(obj["msg"][:TS_DIGITS])
            if client.state is not None and sent_at < client.state:  # an earlier phase's
                client.late += 1
                continue
            latencies.append(now - sent_at)
            arrived += 1
        elif msgid == 11:
            if obj["errno"] == 0:
                client.acked += 1
            else:
                client.count_reply(obj)
        else:
            client.other += 1
    if arrived:
        client.received += arrived
        sender = client.partner
        assert sender is not None
        sender.inflight -= arrived
        if sender.sending:
            send_window(sender)


Address = tuple[str, int]


async def open_pairs(server: servers.ServerProcess, opts: PairsOptions, who: str,
                     partners_at: Address | None = None) -> list[Client]:
    """2 × pairs logged-in connections, partners side by side; with ``partners_at`` the
    second of each pair connects there (another node) instead of to ``server``."""
    common = opts.common
    names = loadgen.names(common.prefix(who), 2 * opts.pairs)
    if partners_at is None:
        clients = await loadgen.open_logged_in(
            server.host, server.port, names, None, common.concurrency)
    else:
        firsts = await loadgen.open_logged_in(
            server.host, server.port, names[0::2], None, common.concurrency)
        seconds = await loadgen.open_logged_in(
            *partners_at, names[1::2], None, common.concurrency)
        clients = [c for pair in zip(firsts, seconds, strict=True) for c in pair]
    if opts.friends:
        await befriend(clients, common.concurrency)
    tail = padding(common.msg_bytes, TS_DIGITS) + b'"}\n'
    for a, b in zip(clients[0::2], clients[1::2], strict=True):
        a.partner, b.partner = b, a
        a.frame_head = b'{"msgid":6,"toid":%d,"msg":"' % b.user_id
        b.frame_head = b'{"msgid":6,"toid":%d,"msg":"' % a.user_id
        a.frame_tail = b.frame_tail = tail
    return clients


async def befriend(clients: list[Client], concurrency: int) -> None:
    """Each pair (side by side in clients) becomes friends: ADD_FRIEND, then the partner
    accepts. What this pushes (the request, the answer, presence) arrives before the load."""

    async def pair(a: Client, b: Client) -> None:
        await a.request({"msgid": 7, "friendid": b.user_id})
        await b.request({"msgid": 13, "friendid": a.user_id, "accept": True})

    await loadgen.bounded_gather(
        [partial(pair, a, b) for a, b in zip(clients[0::2], clients[1::2], strict=True)],
        concurrency)
    await asyncio.sleep(0.5)  # the pushes of the last ones, across nodes too


async def pairs_phase(server: servers.ServerProcess, clients: list[Client], window: int,
                      opts: PairsOptions, label: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    for client in clients:
        client.reset_counters()
        client.window = window
        client.latencies = latencies
        client.on_frames = on_frames
        client.state = now_ns()  # messages sent before this are an earlier phase's
    quiet = await wait_quiet(server, opts.common.wait_quiet)
    meter = Meter(server)
    with no_gc():
        meter.start()
        for client in clients:
            client.sending = True
        for client in clients:
            send_window(client)
        await asyncio.sleep(opts.duration)
        for client in clients:
            client.sending = False
        deadline = loop.time() + opts.common.drain
        while loop.time() < deadline:
            if all(c.inflight == 0 and c.acked + c.errors >= c.sent for c in clients):
                break
            await asyncio.sleep(0.002)
        measured = meter.stop()
    for client in clients:
        client.on_frames = None
    lost_connections = sum(c.lost for c in clients)
    sent = sum(c.sent for c in clients)
    acked = sum(c.acked for c in clients)
    received = sum(c.received for c in clients)
    errors = sum(c.errors for c in clients)
    first_error = next((c.first_error for c in clients if c.first_error), None)
    row: dict[str, Any] = {
        "label": label,
        "server": server.kind,
        "window": window,
        "pairs": opts.pairs,
        "load_seconds": opts.duration,
        "sent": sent,
        "acked": acked,
        "received": received,
        "errors": errors,
        "errors_by_errno": loadgen.errnos_of(clients),
        "first_error": first_error,
        "unacked": sent - acked - errors,
        "loss": acked - received,
        "loss_pct": round(100 * (acked - received) / acked, 3) if acked else None,
        "other_frames": sum(c.other for c in clients),
        "late_from_earlier_phase": sum(c.late for c in clients),
        "lost_connections": lost_connections,
        "delivered_per_s": round(received / opts.duration, 1),
        "latency": latency_summary(latencies),
        **measured,
        "other_core_pct_before": round(100 * quiet),
    }
    per_unit(row, received, "delivered message")
    row["limit"] = limit_of(row)
    return row


def run_pairs_server(server: servers.ServerProcess, opts: PairsOptions, who: str,
                     label: str, *, partners_at: Address | None = None, stop: bool = True,
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every window (and repeat) of the pairs traffic against one running server (and, with
    ``partners_at``, a second node the partners connect to); ``stop`` it afterwards."""
    info = server_info(server)
    info["label"] = label

    async def main() -> list[dict[str, Any]]:
        started = time.perf_counter()
        meter = Meter(server)
        meter.start()
        clients = await open_pairs(server, opts, who, partners_at)
        setup = meter.stop()
        setup["connections"] = len(clients)
        info["setup"] = setup
        info["rss_after_setup_mib"] = round(server.rss_kib() / 1024, 1)
        print(f"  {label}: {len(clients)} connections registered and logged in "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        rows = []
        try:
            for window in opts.windows:
                for run in range(opts.common.repeat):
                    await asyncio.sleep(opts.common.settle)
                    row = await pairs_phase(server, clients, window, opts, label)
                    row["run"] = run + 1
                    rows.append(row)
                    print(f"  {label} W={window} run {run + 1}: "
                          f"{row['delivered_per_s']:,.0f} msg/s, "
                          f"{row['server_us_per_unit']} µs/msg, loss {row['loss']}", flush=True)
        finally:
            for client in clients:
                client.close()
            await asyncio.sleep(0.2)
        return rows

    try:
        rows = run_loop(main, use_uvloop=opts.common.uvloop)
    finally:
        if stop:
            finish_server(server, info)
    return rows, info


def summarize(rows: list[dict[str, Any]], repeat: int) -> list[dict[str, Any]]:
    """One row per (server, window): the run itself, or the median of the runs."""
    summary = []
    order = {label: i for i, label in enumerate(dict.fromkeys(r["label"] for r in rows))}
    keys = sorted({(r["label"], r["window"]) for r in rows}, key=lambda k: (k[1], order[k[0]]))
    for label, window in keys:
        runs = [r for r in rows if r["label"] == label and r["window"] == window]
        if repeat == 1:
            summary.append(dict(runs[0]))
            continue
        median = median_of(runs, MEDIAN_KEYS)
        median.update(label=f"{label} (median of {len(runs)})", server=runs[0]["server"],
                      window=window)
        median["limit"] = limit_of(median)
        summary.append(median)
    for row in summary:
        base = next((b for b in summary if b["server"] == "echo-baseline"
                     and b["window"] == row["window"]), None)
        if base and row["server"] != "echo-baseline" and base.get("server_us_per_unit"):
            row["ratio_to_baseline"] = round(
                row["server_us_per_unit"] / base["server_us_per_unit"], 2)
    return summary
