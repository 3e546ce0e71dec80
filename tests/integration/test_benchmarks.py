"""`python -m benchmarks` runs every scenario from a checkout: each one here in miniature
(a few connections, a second of load), so that the harness cannot rot. Nothing here is timed:
the figures are checked for being there and for what must hold at any speed (no loss, no
error reply, servers that stop cleanly with a clean log), never for how fast."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--duration", "1", "--drain", "2", "--concurrency", "10"]
SCENARIOS = {
    "direct": ["--pairs", "5", *TINY],
    "group": ["--members", "8", "--online", "4", "--window", "2", *TINY],
    "login": ["--users", "12", "--concurrency", "4"],
    "idle": ["--connections", "60", "--pairs", "2", "--rate", "20", "--idle-seconds", "1",
             *TINY],
    "sync": ["--messages", "300", "--limit", "100", "--window", "8"],
    "cross-node": ["--pairs", "4", *TINY] + ([] if shutil.which("nginx") else ["--no-nginx"]),
}


def run(scenario: str, args: list[str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{scenario}.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", scenario, *args, "--json", str(out),
         "--log-dir", str(tmp_path / "logs")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "|" in done.stdout  # the table
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_scenario_runs_and_reports(scenario: str, tmp_path: Path) -> None:
    result = run(scenario, SCENARIOS[scenario], tmp_path)
    assert result["scenario"] == scenario
    # idle reports its chat among the idle connections in its summary
    rows = result.get("runs") or [summary["chat"] for summary in result["summary"]]
    assert rows, "no measured run"
    for row in rows:
        assert row.get("loss", 0) == 0, row
        assert row.get("errors", 0) == 0, row
        assert row.get("failures", 0) == 0, row
        # a second of a few connections may cost less than the clock's 10 ms tick
        assert row["server_cpu_total_seconds"] >= 0 and row["server_us_per_unit"] is not None
        assert row["loadgen_cpu_seconds"] >= 0 and row["latency"]["samples"] > 0, row
    for server in result["servers"]:
        if "exit_code" in server:
            assert server["exit_code"] == 0, server
            assert server["log_problems"]["count"] == 0, server["log_problems"]
    assert result["targets"], "no target reported"
    assert all({"target", "measured", "met"} <= set(t) for t in result["targets"])


@pytest.mark.parametrize("history_days", ["30", "0"])
def test_the_in_process_hot_path_benchmark_runs(history_days: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.hot_path", "--window", "8", "--rounds", "1",
         "--messages", "400", "--history-days", history_days],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "µs of the server's CPU per message" in done.stdout
