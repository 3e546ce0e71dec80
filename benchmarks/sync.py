"""`sync`: a device catching up on N messages with SYNC (PROTOCOL.md Version 2, "The inbox").

One sender sends N one-to-one chats to a user who is away (W in flight), which keeps them in
the user's inbox; then the user logs in on a device with `since` = N (nothing pushed at login)
and, measured, SYNCs from pos 0 the way a client that reconnects does: SYNC {since, limit}, then
again from the last pos it got, until it has `last_pos`. Wall time of the whole catch-up (the
target: 10,000 messages in at most 1 s), server CPU per message, latency per SYNC request.
"""

import argparse
import asyncio
import time
from typing import Any

from benchmarks import loadgen, report, servers
from benchmarks.common import Common, finish_server, no_gc, padding, run_loop, server_info
from benchmarks.loadgen import now_ns
from benchmarks.measure import Meter, latency_summary, limit_of, median_of, per_unit, wait_quiet

TARGET_SECONDS_PER_10K = 1.0

COLUMNS: list[report.Column] = [
    ("server", "label", "{}"),
    ("messages", "messages", "{:,}"),
    ("SYNCs", "requests", "{:,}"),
    ("limit", "limit", "{}"),
    ("catch-up s", "wall_seconds", "{:.3f}"),
    ("messages/s", "messages_per_s", "{:,.0f}"),
    ("p50 ms/SYNC", "latency.p50_ms", "{:.1f}"),
    ("max ms/SYNC", "latency.max_ms", "{:.1f}"),
    ("srv CPU s", "server_cpu_total_seconds", "{:.3f}"),
    ("srv µs/msg", "server_us_per_unit", "{:.2f}"),
    ("srv loop-thread µs/msg", "server_main_thread_us_per_unit", "{:.2f}"),
    ("loadgen µs/msg", "loadgen_us_per_unit", "{:.2f}"),
    ("other %core", "other_core_pct", "{:.0f}"),
    ("bound by", "bound", "{}"),
]
MEDIAN_KEYS = [
    "messages", "requests", "wall_seconds", "messages_per_s", "latency.p50_ms",
    "latency.max_ms", "server_cpu_total_seconds", "server_us_per_unit",
    "server_main_thread_us_per_unit", "loadgen_us_per_unit", "other_core_pct",
]


async def _fill(sender: loadgen.Client, to_id: int, count: int, window: int,
                msg_bytes: int) -> float:
    """Send count chats to to_id, window in flight; return the seconds it took."""
    text = padding(msg_bytes, 0).decode()
    next_number = iter(range(count))
    started = time.perf_counter()

    async def lane() -> None:
        for _ in next_number:
            await sender.request({"msgid": 6, "toid": to_id, "msg": text})

    await asyncio.gather(*(lane() for _ in range(window)))
    return time.perf_counter() - started


async def _catch_up(reader: loadgen.Client, limit: int) -> tuple[int, int, list[int], int]:
    """SYNC from 0 until last_pos: (messages, requests, latency per request, last_pos)."""
    since, received, requests, latencies = 0, 0, 0, []
    while True:
        started = now_ns()
        reply = await reader.request({"msgid": 20, "since": since, "limit": limit})
        latencies.append(now_ns() - started)
        requests += 1
        msgs = reply["msgs"]
        received += len(msgs)
        last_pos = int(reply["last_pos"])
        if not msgs or msgs[-1]["pos"] >= last_pos:
            return received, requests, latencies, last_pos
        since = msgs[-1]["pos"]


def run_sync(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> dict[str, Any]:
    server = servers.start_chatserver(
        common.database, common.log_path("sync", "chatserver"), extra=extra)
    info = server_info(server)
    info["label"] = "chatserver"
    fill: dict[str, Any] = {}

    async def main() -> list[dict[str, Any]]:
        host, port = server.host, server.port
        sender, reader = await loadgen.connect(host, port), await loadgen.connect(host, port)
        try:
            await sender.login(await sender.register(common.prefix("syncs")))
            reader_id = await reader.register(common.prefix("syncr"))
            seconds = await _fill(sender, reader_id, args.messages, args.window,
                                  common.msg_bytes)
            fill.update(messages=args.messages, window=args.window,
                        seconds=round(seconds, 3),
                        per_s=round(args.messages / seconds) if seconds else None)
            print(f"  {args.messages:,} messages kept in {seconds:.2f} s "
                  f"(W={args.window})", flush=True)
            # since = N: the device has everything, so nothing is pushed at login.
            ack = await reader.request({"msgid": 1, "id": reader_id,
                                        "password": loadgen.PASSWORD, "device": "bench",
                                        "since": args.messages})
            if ack.get("offlinemsg") or ack.get("last_pos") != args.messages:
                raise RuntimeError(f"login found last_pos {ack.get('last_pos')} and "
                                   f"{len(ack.get('offlinemsg') or [])} waiting, "
                                   f"not {args.messages} and none")
            rows = []
            for _ in range(common.repeat):
                quiet = await wait_quiet(server, common.wait_quiet)
                meter = Meter(server)
                with no_gc():
                    meter.start()
                    received, requests, latencies, last_pos = await _catch_up(
                        reader, args.limit)
                    measured = meter.stop()
                row: dict[str, Any] = {
                    "label": "chatserver", "server": server.kind,
                    "messages": received, "requests": requests, "limit": args.limit,
                    "last_pos": last_pos, "loss": last_pos - received,
                    "errors": 0, "failures": 0,
                    "messages_per_s": round(received / measured["wall_seconds"])
                    if measured["wall_seconds"] else None,
                    "latency": latency_summary(latencies),
                    **measured, "other_core_pct_before": round(100 * quiet),
                }
                per_unit(row, received, "message")
                row["bound"] = limit_of(row, server_threads=True)
                rows.append(row)
            return rows
        finally:
            sender.close()
            reader.close()

    try:
        rows = run_loop(main, use_uvloop=common.uvloop)
    finally:
        finish_server(server, info)
    summary = [median_of(rows, MEDIAN_KEYS) | {"label": "chatserver", "limit": args.limit,
                                               "bound": rows[-1]["bound"]}]
    print(f"\nsync: {args.messages:,} messages caught up with SYNC (limit {args.limit}), "
          f"{common.repeat} run(s), database {common.database}")
    print(report.table(summary, COLUMNS))
    from benchmarks.scenarios import _options, _target, print_targets

    wall = summary[0].get("wall_seconds")
    allowed = TARGET_SECONDS_PER_10K * args.messages / 10_000
    targets = [
        _target(f"SYNC of {args.messages:,} messages: <= {allowed:g} s", wall,
                wall is not None and wall <= allowed),
        _target("SYNC: every kept message received", summary[0].get("messages"),
                all(row["loss"] == 0 for row in rows)),
    ]
    print_targets(targets)
    return {"scenario": "sync", "options": _options(args), "fill": fill, "servers": [info],
            "runs": rows, "summary": summary, "targets": targets}
