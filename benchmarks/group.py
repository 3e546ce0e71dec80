"""`group`: one group of M members, K of them online; the online members take turns
(round-robin) to send GROUP_CHAT, W group messages in flight at once (a message is in flight
until every other online member has received it). Cost is per delivered copy."""

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks import loadgen, report, servers
from benchmarks.common import Common, finish_server, no_gc, padding, run_loop, server_info
from benchmarks.loadgen import Client, bounded_gather, loads, now_ns
from benchmarks.measure import Meter, latency_summary, limit_of, median_of, per_unit, wait_quiet

TS_DIGITS = 20
NUMBER_DIGITS = 10
TARGET_US_PER_COPY = 5.0  # issue 5 (version 1: nothing kept)
TARGET_US_PER_COPY_INBOX = 8.0  # issue 12: with history on, every copy kept before the ACK

COLUMNS: list[report.Column] = [
    ("server", "label", "{}"),
    ("W", "window", "{}"),
    ("messages/s", "messages_per_s", "{:,.0f}"),
    ("copies/s", "delivered_per_s", "{:,.0f}"),
    ("acked msgs", "acked", "{:,.0f}"),
    ("copies rcvd", "received", "{:,.0f}"),
    ("copy loss", "loss", "{:,.0f}"),
    ("stored copies", "stored_copies", "{:,.0f}"),
    ("p50 ms", "latency.p50_ms", "{:.2f}"),
    ("p99 ms", "latency.p99_ms", "{:.2f}"),
    ("max ms", "latency.max_ms", "{:.1f}"),
    ("srv CPU s", "server_cpu_total_seconds", "{:.2f}"),
    ("srv µs/copy", "server_us_per_unit", "{:.2f}"),
    ("srv µs/copy incl. stored", "server_us_per_copy_incl_stored", "{:.2f}"),
    ("srv %core", "server_core_pct", "{:.0f}"),
    ("srv peak RSS MiB", "server_peak_rss_mib", "{:.1f}"),
    ("loadgen CPU s", "loadgen_cpu_seconds", "{:.2f}"),
    ("loadgen µs/copy", "loadgen_us_per_unit", "{:.2f}"),
    ("loadgen %core", "loadgen_core_pct", "{:.0f}"),
    ("other %core", "other_core_pct", "{:.0f}"),
    ("limit", "limit", "{}"),
]
MEDIAN_KEYS = [
    "messages_per_s", "delivered_per_s", "sent", "acked", "received", "loss", "errors",
    "stored_copies", "latency.p50_ms", "latency.p99_ms", "latency.max_ms",
    "server_cpu_total_seconds", "server_us_per_unit", "server_us_per_copy_incl_stored",
    "server_core_pct", "server_peak_rss_mib", "loadgen_cpu_seconds", "loadgen_us_per_unit",
    "loadgen_core_pct", "other_core_pct", "other_core_pct_before", "wall_seconds",
]


@dataclass
class GroupState:
    online: list[Client]
    window: int
    head: bytes
    tail: bytes
    latencies: list[int] = field(default_factory=list)
    remaining: dict[int, int] = field(default_factory=dict)
    next_sender: int = 0
    number: int = 0
    completed: int = 0
    duplicates: int = 0
    sending: bool = False

    def send_next(self) -> None:
        sender = self.online[self.next_sender]
        self.next_sender = (self.next_sender + 1) % len(self.online)
        self.number += 1
        self.remaining[self.number] = len(self.online) - 1
        frame = self.head + b"%020d%010d" % (now_ns(), self.number) + self.tail
        assert sender.transport is not None
        sender.transport.write(frame)
        sender.sent += 1


def on_frames(client: Client, frames: list[bytes]) -> None:
    now = now_ns()
    state: GroupState = client.state
    latencies = state.latencies
    remaining = state.remaining
    completions = 0
    for frame in frames:
        if not frame:
            continue
        obj = loads(frame)
        msgid = obj["msgid"]
        if msgid == 10:
            text = obj["msg"]
            latencies.append(now - int(text[:TS_DIGITS]))
            client.received += 1
            number = int(text[TS_DIGITS : TS_DIGITS + NUMBER_DIGITS])
            left = remaining.get(number)
            if left is None:
                state.duplicates += 1
            elif left > 1:
                remaining[number] = left - 1
            else:
                del remaining[number]
                completions += 1
        elif msgid == 11:
            if obj["errno"] == 0:
                client.acked += 1
            else:
                client.count_reply(obj)
        else:
            client.other += 1
    if completions:
        state.completed += completions
        if state.sending:
            for _ in range(completions):
                state.send_next()


async def setup_group(server: servers.ServerProcess, args: argparse.Namespace,
                      common: Common) -> tuple[list[Client], int]:
    clients = await loadgen.open_logged_in(
        server.host, server.port, loadgen.names(common.prefix("g"), args.members), None,
        common.concurrency)
    reply = await clients[0].request(
        {"msgid": 8, "groupname": f"bench-{common.token}", "groupdesc": "benchmark"})
    group_id = int(reply["groupid"])
    await bounded_gather(
        (lambda c=c: c.request({"msgid": 9, "groupid": group_id}) for c in clients[1:]),
        common.concurrency)
    away = clients[args.online :]
    await bounded_gather((lambda c=c: c.request({"msgid": 3}) for c in away), common.concurrency)
    for client in away:
        client.close()
    return clients[: args.online], group_id


async def group_phase(server: servers.ServerProcess, online: list[Client], group_id: int,
                      window: int, args: argparse.Namespace, common: Common) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    state = GroupState(
        online, window, b'{"msgid":10,"groupid":%d,"msg":"' % group_id,
        padding(common.msg_bytes, TS_DIGITS + NUMBER_DIGITS) + b'"}\n')
    for client in online:
        client.reset_counters()
        client.state = state
        client.on_frames = on_frames
    quiet = await wait_quiet(server, common.wait_quiet)
    meter = Meter(server)
    with no_gc():
        meter.start()
        state.sending = True
        for _ in range(window):
            state.send_next()
        await asyncio.sleep(args.duration)
        state.sending = False
        deadline = loop.time() + common.drain
        while loop.time() < deadline:
            if not state.remaining and all(c.acked + c.errors >= c.sent for c in online):
                break
            await asyncio.sleep(0.002)
        measured = meter.stop()
    for client in online:
        client.on_frames = None
    sent = sum(c.sent for c in online)
    acked = sum(c.acked for c in online)
    received = sum(c.received for c in online)
    errors = sum(c.errors for c in online)
    copies_each = len(online) - 1
    away = args.members - args.online
    row: dict[str, Any] = {
        "label": "chatserver",
        "server": server.kind,
        "window": window,
        "members": args.members,
        "online": args.online,
        "load_seconds": args.duration,
        "sent": sent,
        "acked": acked,
        "errors": errors,
        "errors_by_errno": loadgen.errnos_of(online),
        "first_error": next((c.first_error for c in online if c.first_error), None),
        "completed": state.completed,
        "received": received,
        "expected_copies": acked * copies_each,
        "loss": acked * copies_each - received,
        "duplicates": state.duplicates,
        "stored_copies": acked * away,
        "messages_per_s": round(state.completed / args.duration, 1),
        "delivered_per_s": round(received / args.duration, 1),
        "lost_connections": sum(c.lost for c in online),
        "latency": latency_summary(state.latencies),
        **measured,
        "other_core_pct_before": round(100 * quiet),
    }
    per_unit(row, received, "delivered copy")
    copies = received + acked * away
    row["server_us_per_copy_incl_stored"] = (
        round(1e6 * row["server_cpu_total_seconds"] / copies, 2) if copies else None)
    row["limit"] = limit_of(row)
    return row


def run_group(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> dict[str, Any]:
    if not 2 <= args.online <= args.members:
        raise SystemExit("--online must be between 2 and --members")
    server = servers.start_chatserver(
        common.database, common.log_path("group", "chatserver"), extra=extra)
    info = server_info(server)

    async def main() -> list[dict[str, Any]]:
        started = time.perf_counter()
        meter = Meter(server)
        meter.start()
        online, group_id = await setup_group(server, args, common)
        info["setup"] = meter.stop()
        print(f"  {args.members} members registered, logged in and joined, "
              f"{args.members - args.online} logged out again, in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        rows = []
        try:
            for window in args.window:
                for run in range(common.repeat):
                    await asyncio.sleep(common.settle)
                    row = await group_phase(server, online, group_id, window, args, common)
                    row["run"] = run + 1
                    rows.append(row)
                    print(f"  group W={window} run {run + 1}: "
                          f"{row['delivered_per_s']:,.0f} copies/s, "
                          f"{row['server_us_per_unit']} µs/copy, loss {row['loss']}", flush=True)
        finally:
            for client in online:
                client.close()
            await asyncio.sleep(0.2)
        return rows

    try:
        rows = run_loop(main, use_uvloop=common.uvloop)
    finally:
        finish_server(server, info)
    summary = []
    for window in args.window:
        runs = [r for r in rows if r["window"] == window]
        if len(runs) == 1:
            summary.append(dict(runs[0]))
        else:
            median = median_of(runs, MEDIAN_KEYS)
            median.update(label=f"chatserver (median of {len(runs)})", server="chatserver",
                          window=window)
            median["limit"] = limit_of(median)
            summary.append(median)
    print(f"\ngroup: {args.members} members, {args.online} online, round-robin senders, "
          f"{args.duration:g} s per run, database {common.database}")
    print(report.table(summary, COLUMNS))
    targets = []
    for row in summary:
        us = row.get("server_us_per_unit")
        targets.append({"target": f"group W={row['window']}: <= {TARGET_US_PER_COPY} µs "
                        "server CPU per delivered copy", "measured": us,
                        "met": us is not None and us <= TARGET_US_PER_COPY})
        targets.append({"target": f"group W={row['window']}, history on (issue 12): <= "
                        f"{TARGET_US_PER_COPY_INBOX} µs server CPU per delivered copy",
                        "measured": us, "met": us is not None and us <= TARGET_US_PER_COPY_INBOX})
    from benchmarks.scenarios import _options, print_targets

    print_targets(targets)
    return {"scenario": "group", "options": _options(args), "servers": [info], "runs": rows,
            "summary": summary, "targets": targets}
