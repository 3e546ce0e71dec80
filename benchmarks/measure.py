"""Measured phases: CPU of the server (and of every process taking part) from /proc and of
the load generator from os.times(), taken right before and right after the phase; and the
figures derived from them."""

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks import procstat
from benchmarks.servers import ServerProcess

# Above this share of one core, a single-threaded process is taken as the limit.
BUSY_CORE_PCT = 85.0


@dataclass
class Meter:
    server: ServerProcess
    started: float = 0.0
    server_before: dict[str, procstat.CpuSample] = field(default_factory=dict)
    own_before: procstat.CpuSample = field(default_factory=lambda: procstat.CpuSample(0, 0))
    machine_before: tuple[float, float] = (0.0, 0.0)
    main_before: procstat.CpuSample = field(default_factory=lambda: procstat.CpuSample(0, 0))

    def start(self) -> None:
        self.machine_before = procstat.machine_busy_seconds()
        self.server_before = self.server.cpu()
        self.main_before = self.server.main_thread_cpu()
        self.own_before = procstat.own_cpu()
        self.started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        own = procstat.own_cpu() - self.own_before
        after = self.server.cpu()
        main = self.server.main_thread_cpu() - self.main_before
        busy, steal = procstat.machine_busy_seconds()
        server = {name: after[name] - self.server_before[name] for name in after}
        total = sum(cpu.total for cpu in server.values())
        # Whatever else ran on the machine meanwhile (other programs, kernel threads).
        other = busy - self.machine_before[0] - total - own.total
        return {
            "wall_seconds": round(wall, 3),
            "server_cpu_seconds": {name: round(cpu.total, 3) for name, cpu in server.items()},
            "server_cpu_user_system": {
                name: [round(cpu.user, 3), round(cpu.system, 3)] for name, cpu in server.items()
            },
            "server_cpu_total_seconds": round(total, 3),
            "server_core_pct": round(100 * total / wall, 1) if wall else None,
            # The server process's main thread (its event loop); the rest of its CPU is
            # worker threads (password hashing, database calls).
            "server_main_thread_cpu_seconds": round(main.total, 3),
            "server_rss_mib": round(self.server.rss_kib() / 1024, 1),
            "server_peak_rss_mib": round(self.server.peak_rss_kib() / 1024, 1),
            "loadgen_cpu_seconds": round(own.total, 3),
            "loadgen_cpu_user_system": [round(own.user, 3), round(own.system, 3)],
            "loadgen_core_pct": round(100 * own.total / wall, 1) if wall else None,
            "other_core_pct": round(100 * max(0.0, other) / wall, 1) if wall else None,
            "steal_core_pct": round(100 * (steal - self.machine_before[1]) / wall, 1)
            if wall else None,
        }


QUIET_OTHER_CORE = 0.15  # other programs using less than this share of a core: quiet


async def wait_quiet(server: ServerProcess, max_wait: float) -> float:
    """Wait (up to ``max_wait`` seconds) until programs other than the server and the load
    generator use less than QUIET_OTHER_CORE of a core over a second; return the last share."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = procstat.machine_busy_seconds()[0]
        server0 = sum(c.total for c in server.cpu().values())
        own0 = procstat.own_cpu().total
        await asyncio.sleep(1.0 if max_wait > 0 else 0.25)
        busy1 = procstat.machine_busy_seconds()[0]
        server1 = sum(c.total for c in server.cpu().values())
        own1 = procstat.own_cpu().total
        other = (busy1 - busy0) - (server1 - server0) - (own1 - own0)
        share = max(0.0, other / (1.0 if max_wait > 0 else 0.25))
        if share < QUIET_OTHER_CORE or time.monotonic() >= deadline:
            return round(share, 2)


def latency_summary(samples_ns: list[int]) -> dict[str, Any]:
    if not samples_ns:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples_ns)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(ordered[min(last, int(q * len(ordered)))] / 1e6, 3)

    return {"samples": len(ordered), "p50_ms": at(0.50), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] / 1e6, 3)}


def per_unit(measured: dict[str, Any], units: int, unit: str) -> None:
    """Add server and load-generator CPU per ``unit`` (µs) to ``measured``."""
    measured["unit"] = unit
    measured["units"] = units
    if units:
        measured["server_us_per_unit"] = round(
            1e6 * measured["server_cpu_total_seconds"] / units, 2)
        measured["loadgen_us_per_unit"] = round(1e6 * measured["loadgen_cpu_seconds"] / units, 2)
        measured["server_main_thread_us_per_unit"] = round(
            1e6 * measured["server_main_thread_cpu_seconds"] / units, 2)
    else:
        measured["server_us_per_unit"] = measured["loadgen_us_per_unit"] = None
        measured["server_main_thread_us_per_unit"] = None


def limit_of(measured: dict[str, Any], *, server_threads: bool = False) -> str:
    """What most likely bounded the phase, from the CPU shares (2 cores shared)."""
    loadgen = measured.get("loadgen_core_pct") or 0.0
    server = measured.get("server_core_pct") or 0.0
    other = measured.get("other_core_pct") or 0.0
    if other >= 20:
        return f"disturbed: other programs used {other:.0f}% of a core"
    if loadgen + server >= 180:
        return "both cores busy"
    if loadgen >= BUSY_CORE_PCT and loadgen >= server:
        return "load generator (one core)"
    if server >= BUSY_CORE_PCT and not server_threads:
        return "server (one core)"
    if server >= BUSY_CORE_PCT:
        return "server"
    return "round trips (neither process saturated)"


def median_of(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """A row holding the median of each numeric key over ``rows`` (nested keys with '.')."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [get(row, key) for row in rows]
        numbers = [v for v in values if isinstance(v, int | float)]
        if numbers:
            put(out, key, round(statistics.median(numbers), 3))
    return out


def get(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def put(row: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        row = row.setdefault(part, {})
    row[last] = value
