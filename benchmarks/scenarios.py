"""The scenarios: each starts its server(s), drives the load, prints its tables and returns
the JSON document."""

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

from benchmarks import report, servers
from benchmarks.chat import CHAT_COLUMNS, PairsOptions, run_pairs_server, summarize
from benchmarks.common import Common

Document = dict[str, Any]

CHAT_TARGET_W8_US = 10.5  # the C++ original's µs per delivered message at W = 8
CHAT_TARGET_W8_RATIO = 1.5
CHAT_TARGET_W1_RATIO = 1.25
CHAT_TARGET_W1_P99_MS = 5.0
# Issue 12: with history on (the default), every message kept before its ACK.
INBOX_TARGET_W8_RATIO = 2.0
INBOX_TARGET_W1_RATIO = 1.5


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if not isinstance(v, int | float | str | list | bool | None) else v)
            for k, v in vars(args).items()}


def _target(text: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"target": text, "measured": value, "met": met}


def print_targets(targets: list[dict[str, Any]]) -> None:
    if not targets:
        return
    print("\ntargets (issues 5 and 12):")
    for t in targets:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        print(f"  {verdict:8} {t['target']}: {t['measured']}")


def chat_targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for row in summary:
        if row["server"] != "chatserver":
            continue
        us, ratio = row.get("server_us_per_unit"), row.get("ratio_to_baseline")
        loss, p99 = row.get("loss"), (row.get("latency") or {}).get("p99_ms")
        if row["window"] == 8:
            targets.append(_target(f"direct W=8: <= {CHAT_TARGET_W8_US} µs/msg", us,
                                   us is not None and us <= CHAT_TARGET_W8_US))
            targets.append(_target(f"direct W=8: <= {CHAT_TARGET_W8_RATIO}x the baseline",
                                   ratio, None if ratio is None
                                   else ratio <= CHAT_TARGET_W8_RATIO))
            targets.append(_target("direct W=8: 0 loss", loss, loss == 0))
            targets.append(_target(f"direct W=8, history on (issue 12): <= "
                                   f"{INBOX_TARGET_W8_RATIO}x the baseline", ratio,
                                   None if ratio is None else ratio <= INBOX_TARGET_W8_RATIO))
        if row["window"] == 1:
            targets.append(_target(f"direct W=1: <= {CHAT_TARGET_W1_RATIO}x the baseline",
                                   ratio, None if ratio is None
                                   else ratio <= CHAT_TARGET_W1_RATIO))
            targets.append(_target(f"direct W=1: p99 <= {CHAT_TARGET_W1_P99_MS} ms", p99,
                                   p99 is not None and p99 <= CHAT_TARGET_W1_P99_MS))
            targets.append(_target("direct W=1: 0 loss", loss, loss == 0))
            targets.append(_target(f"direct W=1, history on (issue 12): <= "
                                   f"{INBOX_TARGET_W1_RATIO}x the baseline", ratio,
                                   None if ratio is None else ratio <= INBOX_TARGET_W1_RATIO))
    return targets


def _print_chat(title: str, summary: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(report.table(summary, CHAT_COLUMNS))


def _echo_loop(loop: str) -> str:
    """The echo baseline's loop: uvloop unless asked otherwise or not installed."""
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        print("note: uvloop is not installed (pip install -e '.[bench]'): the echo baseline "
              "runs on the standard loop, which costs about twice as much per message at "
              "W = 1, so every ratio to it reads low (docs/performance.md)")
        return "asyncio"
    return loop


def echo_baseline(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    opts = PairsOptions(common, args.pairs, args.window, args.duration)  # it has no friends
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [_echo_loop(args.loop)]
    rows, infos = [], []
    for loop in loops:
        server = servers.start_echo_server(
            common.log_path("echo-baseline", f"echo-{loop}"), uvloop=loop == "uvloop")
        found, info = run_pairs_server(server, opts, f"e{loop[0]}", f"echo-baseline ({loop})")
        rows += found
        infos.append(info)
    summary = summarize(rows, common.repeat)
    _print_chat(f"echo-baseline: {args.pairs} pairs, {args.duration:g} s per run", summary)
    return {"scenario": "echo-baseline", "options": _options(args), "servers": infos,
            "runs": rows, "summary": summary, "targets": []}


def direct(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    opts = PairsOptions(common, args.pairs, args.window, args.duration,
                        getattr(args, "friends", False))
    rows, infos = [], []
    if args.baseline:
        loop = _echo_loop(args.baseline_loop)
        server = servers.start_echo_server(
            common.log_path("direct", f"echo-{loop}"), uvloop=loop == "uvloop")
        # The floor knows no friends: its pairs are as they are.
        floor = PairsOptions(common, args.pairs, args.window, args.duration)
        found, info = run_pairs_server(server, floor, "e", f"echo-baseline ({loop})")
        rows += found
        infos.append(info)
    server = servers.start_chatserver(
        common.database, common.log_path("direct", "chatserver"), extra=extra)
    found, info = run_pairs_server(server, opts, "d", "chatserver")
    rows += found
    infos.append(info)
    summary = summarize(rows, common.repeat)
    _print_chat(f"direct: {args.pairs} pairs on one node, {args.duration:g} s per run, "
                f"database {common.database}", summary)
    targets = chat_targets(summary)
    print_targets(targets)
    return {"scenario": "direct", "options": _options(args), "servers": infos, "runs": rows,
            "summary": summary, "targets": targets}


def group(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    from benchmarks.group import run_group

    return run_group(args, common, extra)


def login(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    from benchmarks.login import run_login

    return run_login(args, common, extra)


def idle(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    from benchmarks.idle import run_idle

    return run_idle(args, common, extra)


def cross_node(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    from benchmarks.cross_node import run_cross_node

    return run_cross_node(args, common, extra)


def sync(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    from benchmarks.sync import run_sync

    return run_sync(args, common, extra)


def run_all(args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    """The reduced set that fits in about three minutes."""
    parts: dict[str, Document] = {}
    base = {k: v for k, v in vars(args).items() if k != "scenario"}
    plans: list[tuple[str, Callable[..., Document], dict[str, Any]]] = [
        ("direct", direct, {"pairs": 100, "window": [1, 8], "duration": 5.0,
                            "baseline": True, "baseline_loop": "uvloop"}),
        ("group", group, {"members": 100, "online": 50, "window": [8], "duration": 5.0}),
        ("login", login, {"users": 300, "hash_cost": None}),
    ]
    for name, runner, overrides in plans:
        print(f"\n=== {name} ===", flush=True)
        scenario_args = argparse.Namespace(**{**base, **overrides, "scenario": name})
        parts[name] = runner(scenario_args, common, extra)
    targets = [t for part in parts.values() for t in part.get("targets", [])]
    print("\n=== all ===")
    print_targets(targets)
    return {"scenario": "all", "options": _options(args), "parts": parts,
            "servers": [s for part in parts.values() for s in part.get("servers", [])],
            "targets": targets}


RUNNERS: dict[str, Callable[[argparse.Namespace, Common, dict[str, int]], Document]] = {
    "echo-baseline": echo_baseline,
    "direct": direct,
    "group": group,
    "login": login,
    "idle": idle,
    "cross-node": cross_node,
    "sync": sync,
    "all": run_all,
}


def run(name: str, args: argparse.Namespace, common: Common, extra: dict[str, int]) -> Document:
    return RUNNERS[name](args, common, extra)
