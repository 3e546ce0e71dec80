"""python -m benchmarks SCENARIO [options]: see --help, and docs/performance.md."""

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import procstat, report, servers
from benchmarks.common import Common

SCENARIOS = ["echo-baseline", "direct", "group", "login", "idle", "cross-node", "sync", "all"]


def _windows(text: str) -> list[int]:
    try:
        windows = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not windows or min(windows) < 1 or max(windows) > 1000:
        raise argparse.ArgumentTypeError("windows are integers from 1 to 1000")
    return windows


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of chatserver: one load-generator process (asyncio + uvloop, "
        "raw Protocols) against a server process started here on a free loopback port. "
        "Prints a table and writes JSON. docs/performance.md explains the figures.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", default="memory://",
                        help="database URL of the chatserver under test (default %(default)s)")
    common.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default "
                        "benchmarks/results/SCENARIO-TIMESTAMP.json)")
    common.add_argument("--drain", type=float, default=1.0,
                        help="seconds to wait after the load for messages in flight "
                        "(default %(default)s)")
    common.add_argument("--repeat", type=_positive(int), default=1,
                        help="measured runs per window; with more than one the table shows "
                        "medians (default %(default)s)")
    common.add_argument("--concurrency", type=_positive(int), default=50,
                        help="registrations/logins at a time during setup (default %(default)s)")
    common.add_argument("--msg-bytes", type=_positive(int), default=32,
                        help="length of each chat text (default %(default)s; >= 30)")
    common.add_argument("--no-uvloop", dest="uvloop", action="store_false",
                        help="run the load generator on the stdlib event loop")
    common.add_argument("--also-measure", action="append", default=[], metavar="NAME_OR_PID",
                        help="add the CPU of another process taking part (e.g. mariadbd, "
                        "redis-server, or a pid) to the server's; repeatable")
    common.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each measured phase, wait up to SECONDS for other "
                        "programs to use under 15%% of a core (a shared machine); the share "
                        "seen is reported as other_core_pct_before (default: no wait)")
    common.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to `chatserver serve` (repeatable; e.g. "
                        "--server-arg=--log-level=WARNING). --connections-per-address 0 is "
                        "passed by itself when the server has it (the load is one address)")
    common.add_argument("--chatserver-dir", type=Path, default=None, metavar="DIR",
                        help="measure the chatserver package of another checkout (e.g. a "
                        "clone at some commit); default: this one")
    common.add_argument("--log-dir", type=Path, default=report.RESULTS / "logs",
                        help="where server logs go (default %(default)s)")

    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    def pairs_options(p: argparse.ArgumentParser, duration: float) -> None:
        p.add_argument("--pairs", type=_positive(int), default=100,
                       help="pairs of connections (default %(default)s)")
        p.add_argument("--window", type=_windows, default=[1, 8],
                       help="messages in flight per sender, comma-separated list "
                       "(default 1,8)")
        p.add_argument("--duration", type=_positive(float), default=duration,
                       help="seconds of load per measured run (default %(default)s)")
        p.add_argument("--friends", action="store_true",
                       help="partners befriend each other before the load (chatserver "
                       "only; default: strangers)")

    echo = sub.add_parser("echo-baseline", parents=[common],
                          help="pairs traffic against the cheapest router (the floor)")
    pairs_options(echo, 10.0)
    echo.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="uvloop",
                      help="event loop of the echo server (default %(default)s)")

    direct = sub.add_parser("direct", parents=[common],
                            help="N pairs chatting one-to-one on one node, W in flight")
    pairs_options(direct, 10.0)
    direct.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not run the echo baseline in the same run")
    direct.add_argument("--baseline-loop", choices=["asyncio", "uvloop"], default="uvloop",
                        help="event loop of the echo baseline (default %(default)s)")

    group = sub.add_parser("group", parents=[common],
                           help="a group of M members, some online, round-robin senders")
    group.add_argument("--members", type=_positive(int), default=100)
    group.add_argument("--online", type=_positive(int), default=50,
                       help="members online (default %(default)s); the rest are away")
    group.add_argument("--window", type=_windows, default=[1, 8],
                       help="group messages in flight (a message is in flight until every "
                       "online member has it), comma-separated list (default 1,8)")
    group.add_argument("--duration", type=_positive(float), default=10.0)

    login = sub.add_parser("login", parents=[common],
                           help="registering then logging in U users, C at a time")
    login.add_argument("--users", type=_positive(int), default=1000)
    login.add_argument("--hash-cost", type=_positive(int), default=None,
                       help="also run against a server started with this --hash-cost "
                       "(only if the server has the option; default: 2 when it has)")

    idle = sub.add_parser("idle", parents=[common],
                          help="N logged-in idle connections: memory, and chat among a few")
    idle.add_argument("--connections", type=_positive(int), default=10_000,
                      help="idle logged-in connections (default %(default)s)")
    idle.add_argument("--pairs", type=_positive(int), default=10,
                      help="pairs chatting among the idle ones (default %(default)s)")
    idle.add_argument("--rate", type=_positive(float), default=50.0,
                      help="messages per second per chatting sender (default %(default)s)")
    idle.add_argument("--duration", type=_positive(float), default=10.0,
                      help="seconds of chat (default %(default)s)")
    idle.add_argument("--idle-seconds", type=_positive(float), default=5.0,
                      help="seconds of server CPU measured with everyone idle")
    idle.add_argument("--ping-every", type=float, default=20.0, metavar="SECONDS",
                      help="each idle connection PINGs this often, as clients do (the "
                      "terminal client: 20 s); 0: never (default %(default)s)")
    idle.add_argument("--seed", choices=["sqlite", "wire"], default="sqlite",
                      help="sqlite (default): users are written beforehand into a fresh "
                      "SQLite database with a cheap scrypt cost through chatserver's own "
                      "bootstrap(), and the server runs on it (logins then cost no hash); "
                      "wire: registered through the server with --database (10,000 users "
                      "at the default hash cost take ~15 minutes)")

    cross = sub.add_parser("cross-node", parents=[common],
                           help="pairs split over two nodes with Redis (and through nginx), "
                           "against one node in the same run")
    pairs_options(cross, 10.0)
    cross.add_argument("--bus", default="redis://127.0.0.1:6379/0",
                       help="Redis of the two nodes, on this machine (its CPU is counted); a "
                       "namespace of the run's own is added unless the URL names one "
                       "(default %(default)s)")
    cross.add_argument("--no-nginx", dest="nginx", action="store_false",
                       help="skip the run through nginx")
    cross.add_argument("--no-one-node", action="store_true",
                       help="skip the one-node run (no ratio then)")
    cross.add_argument("--shared-dir", default="/dev/shm" if Path("/dev/shm").is_dir()
                       else "/tmp", help="where the shared SQLite file goes when --database "
                       "is memory:// (default %(default)s)")
    # Messages through Redis can take seconds under this load: wait for them before counting.
    cross.set_defaults(drain=10.0)

    sync = sub.add_parser("sync", parents=[common],
                          help="a device catching up on N kept messages with SYNC")
    sync.add_argument("--messages", type=_positive(int), default=10_000,
                      help="messages kept for the user, then synced (default %(default)s)")
    sync.add_argument("--limit", type=_positive(int), default=500,
                      help="SYNC's limit, messages per request (default %(default)s, the "
                      "protocol's most)")
    sync.add_argument("--window", type=_positive(int), default=64,
                      help="chats in flight while the inbox is filled (default %(default)s)")

    sub.add_parser("all", parents=[common],
                   help="echo-baseline, direct (W=1, W=8), group, login, reduced (~1.5 min)")
    return parser


def _common(args: argparse.Namespace) -> Common:
    if args.msg_bytes < 30:
        sys.exit("--msg-bytes must be at least 30 (20 digits of timestamp and 10 of number)")
    if not args.database.startswith(("memory:", "sqlite:")):
        print(f"note: database {args.database} is passed to the server as is", file=sys.stderr)
    if args.uvloop and importlib.util.find_spec("uvloop") is None:
        print("note: uvloop is not installed (pip install -e '.[bench]'): the load generator "
              "runs on the stdlib event loop, which costs it more CPU", file=sys.stderr)
        args.uvloop = False
    return Common(
        database=args.database, uvloop=args.uvloop, drain=args.drain, repeat=args.repeat,
        concurrency=args.concurrency, msg_bytes=args.msg_bytes,
        also_measure=args.also_measure, log_dir=args.log_dir, wait_quiet=args.wait_quiet,
    )


def extra_processes(names_or_pids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in names_or_pids:
        if item.isdigit():
            found[f"pid{item}"] = int(item)
            continue
        pids = procstat.pids_named(item)
        if not pids:
            sys.exit(f"--also-measure {item}: no such process running")
        for i, pid in enumerate(pids):
            found[item if i == 0 else f"{item}#{i}"] = pid
    return found


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    rows = list(document.get("runs", [])) + [
        r["chat"] for r in document.get("summary", []) if isinstance(r.get("chat"), dict)]
    for part in document.get("parts", {}).values():
        rows += _rows(part)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common = _common(args)
    if args.chatserver_dir is not None:
        if not (args.chatserver_dir / "chatserver" / "__init__.py").is_file():
            sys.exit(f"--chatserver-dir {args.chatserver_dir}: no chatserver package there")
        servers.CHATSERVER_DIR = args.chatserver_dir.resolve()
    servers.EXTRA_SERVER_ARGS[:] = args.server_arg
    soft, hard = servers.raise_nofile_limit()
    extra = extra_processes(common.also_measure)
    started = time.perf_counter()
    from benchmarks import scenarios

    document = scenarios.run(args.scenario, args, common, extra)
    document["open_file_limit"] = {"soft": soft, "hard": hard}
    document["environment"] = report.environment()
    document["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    path = args.json or report.default_json_path(args.scenario)
    report.write_json(path, document)
    print(f"\nresults: {path} ({document['elapsed_seconds']:.0f} s in all)")
    errnos: dict[str, int] = {}
    for row in _rows(document):
        for errno, count in (row.get("errors_by_errno") or {}).items():
            errnos[errno] = errnos.get(errno, 0) + count
    if errnos:
        print(f"error replies by errno: {errnos}")
    if "9" in errnos:
        print("warning: the server rate-limited the load (errno 9): these figures measure its "
              "limiter, not its routing; lift the limit with --server-arg if it has an option")
    bugs = [s for s in document.get("servers", []) if s.get("log_problems", {}).get("count")]
    for info in bugs:
        print(f"server log {info['log']}: {info['log_problems']['count']} problem lines, "
              f"first: {info['log_problems']['lines'][:1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
