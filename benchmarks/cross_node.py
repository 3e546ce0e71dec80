"""`cross-node`: the pairs traffic of `direct`, each pair split over two nodes that share a
database and a Redis bus, so every message goes from one node through Redis to the other;
then the same through nginx in front of the nodes; and, in the same run, one node alone, the
figure the cross-node cost is a ratio to. CPU is summed over both nodes, Redis and nginx."""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from benchmarks import report, servers
from benchmarks.chat import CHAT_COLUMNS, PairsOptions, run_pairs_server, summarize
from benchmarks.common import Common, finish_server, server_info
from benchmarks.measure import median_of
from chatserver.entrypoints.local_cluster import NGINX_STREAM_MODULE

TARGET_RATIO = 2.5  # issue 5: both nodes and Redis together, against one node
ONE_NODE = "chatserver"

# One proxy per node, so the harness still decides which node each client is on.
NGINX_CONFIG = """\
{load_module}
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
stream {{
{servers}
}}
"""
NGINX_SERVER = """\
    server {{
        listen {host}:{listen};
        proxy_pass {host}:{node};
        proxy_timeout 120s;
        tcp_nodelay on;
    }}"""

COLUMNS: list[report.Column] = [
    (header, key, fmt) if key != "ratio_to_baseline" else ("× one node", "ratio_to_one_node", fmt)
    for header, key, fmt in CHAT_COLUMNS
]
COLUMNS[COLUMNS.index(("srv peak RSS MiB", "server_peak_rss_mib", "{:.1f}"))] = (
    "node A peak RSS MiB", "server_peak_rss_mib", "{:.1f}")
SPLIT_COLUMNS: list[report.Column] = [
    ("server", "label", "{}"),
    ("W", "window", "{}"),
    ("µs/msg all", "server_us_per_unit", "{:.2f}"),
    ("node A", "us_per_msg.node-a", "{:.2f}"),
    ("node B", "us_per_msg.node-b", "{:.2f}"),
    ("redis-server", "us_per_msg.redis-server", "{:.2f}"),
    ("nginx", "us_per_msg.nginx", "{:.2f}"),
    ("one node", "us_per_msg.chatserver", "{:.2f}"),
    ("× one node", "ratio_to_one_node", "{:.2f}"),
]
SPLIT_KEYS = [f"us_per_msg.{name}"
              for name in ("node-a", "node-b", "redis-server", "nginx", "chatserver")]


def with_namespace(bus: str, token: str) -> str:
    """The bus URL with a namespace of this run's own unless it names one: nothing the run
    writes or publishes in Redis meets a test or another run using the same Redis."""
    parts = urlsplit(bus)
    query = dict(parse_qsl(parts.query))
    query.setdefault("namespace", f"bench-{token}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def redis_of(bus: str) -> tuple[Any, str]:
    """A Redis client for the bus URL (without chatserver's query options), and the namespace."""
    import redis

    parts = urlsplit(bus)
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", "chatserver")
    url = urlunsplit(parts._replace(query=urlencode(query)))
    return redis.Redis.from_url(url), namespace


def redis_server_pid(bus: str) -> int:
    """The pid of the redis-server behind ``bus``, which must run on this machine."""
    client, _ = redis_of(bus)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    if not Path(f"/proc/{pid}/stat").exists():
        raise SystemExit(f"Redis at {bus} says its pid is {pid}, which is not on this machine: "
                         "its CPU could not be counted")
    return pid


def forget_namespace(bus: str) -> int:
    """Delete what the nodes left under this run's namespace (leases, presence)."""
    client, namespace = redis_of(bus)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx in front of the nodes: one listening port per node."""

    def __init__(self, host: str, node_ports: list[int], run_dir: Path) -> None:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light "
                               "libnginx-mod-stream)")
        self.host = host
        self.ports = [free_port(host) for _ in node_ports]
        load = f"load_module {NGINX_STREAM_MODULE};" if NGINX_STREAM_MODULE.exists() else ""
        blocks = "\n".join(NGINX_SERVER.format(host=host, listen=listen, node=node)
                           for listen, node in zip(self.ports, node_ports, strict=True))
        config = run_dir / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(load_module=load, run_dir=run_dir, servers=blocks))
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(config), "-p", str(run_dir), "-e",
             str(run_dir / "nginx-error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=servers.raise_nofile_limit)
        self._wait_listening(run_dir)

    def _wait_listening(self, run_dir: Path) -> None:
        deadline = time.monotonic() + 10
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    log = (run_dir / "nginx-error.log")
                    raise RuntimeError("nginx exited: " + (log.read_text() if log.exists() else ""))
                try:
                    socket.create_connection((self.host, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nginx does not listen on {port}") from None
                    time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        """The master and its worker(s)."""
        found = {"nginx": self.proc.pid}
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            children = ""
        for i, pid in enumerate(children.split()):
            found[f"nginx-worker{i}"] = int(pid)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _split_per_message(rows: list[dict[str, Any]]) -> None:
    """Each process's µs per delivered message (nginx master and workers together)."""
    for row in rows:
        units = row.get("units") or 0
        split: dict[str, float] = {}
        for name, seconds in (row.get("server_cpu_seconds") or {}).items():
            key = "nginx" if name.startswith("nginx") else name
            split[key] = split.get(key, 0.0) + seconds
        row["us_per_msg"] = {k: round(1e6 * v / units, 2) if units else None
                             for k, v in split.items()}


def _summarize(rows: list[dict[str, Any]], repeat: int) -> list[dict[str, Any]]:
    summary = summarize(rows, repeat)
    for row in summary:
        runs = [r for r in rows if row["label"].split(" (median of")[0] == r["label"]
                and r["window"] == row["window"]]
        if repeat > 1:
            row.update({k: v for k, v in median_of(runs, SPLIT_KEYS).items()})
        one = next((r for r in summary if r["server"] == ONE_NODE
                    and r["window"] == row["window"]), None)
        if one and row["server"] != ONE_NODE and one.get("server_us_per_unit"):
            row["ratio_to_one_node"] = round(
                row["server_us_per_unit"] / one["server_us_per_unit"], 2)
    return summary


def targets_of(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for row in summary:
        ratio = row.get("ratio_to_one_node")
        if row["server"] == ONE_NODE or ratio is None:
            continue
        targets.append({"target": f"cross-node W={row['window']} ({row['label']}): "
                        f"<= {TARGET_RATIO}x one node", "measured": ratio,
                        "met": ratio <= TARGET_RATIO})
    return targets


def run_cross_node(args: argparse.Namespace, common: Common,
                   extra: dict[str, int]) -> dict[str, Any]:
    opts = PairsOptions(common, args.pairs, args.window, args.duration,
                        getattr(args, "friends", False))
    bus = with_namespace(args.bus, common.token)
    redis_pid = redis_server_pid(bus)
    made_database = None
    database = common.database
    if database.startswith("memory:"):
        made_database = Path(args.shared_dir) / f"chatserver-bench-{common.token}.db"
        database = f"sqlite:///{made_database}"
    rows: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    print(f"  database {database}, bus {bus} (redis-server pid {redis_pid})", flush=True)
    try:
        if not args.no_one_node:
            one = servers.start_chatserver(
                database, common.log_path("cross-node", "one-node"), extra=extra)
            found, info = run_pairs_server(one, opts, "o", "one node")
            rows += found
            infos.append(info)
        node_a = servers.start_chatserver(
            database, common.log_path("cross-node", "node-a"),
            extra_args=["--bus", bus, "--node-id", f"bench{common.token}a"])
        try:
            node_b = servers.start_chatserver(
                database, common.log_path("cross-node", "node-b"),
                extra_args=["--bus", bus, "--node-id", f"bench{common.token}b"])
        except BaseException:
            node_a.stop()
            raise
        node_a.kind, node_b.kind = "node-a", "node-b"
        node_a.extra = {"node-b": node_b.pid, "redis-server": redis_pid, **extra}
        info_a, info_b = server_info(node_a), server_info(node_b)
        try:
            found, info = run_pairs_server(node_a, opts, "x", "two nodes + Redis",
                                           partners_at=(node_b.host, node_b.port), stop=False)
            rows += found
            infos.append(info)
            if args.nginx:
                with tempfile.TemporaryDirectory(prefix="bench-nginx-") as run_dir:
                    nginx = Nginx(node_a.host, [node_a.port, node_b.port], Path(run_dir))
                    try:
                        node_a.extra.update(nginx.pids())
                        proxied = servers.ServerProcess(
                            "node-a", node_a.command, node_a.proc, node_a.log_path,
                            node_a.host, nginx.ports[0], extra=node_a.extra)
                        found, info = run_pairs_server(
                            proxied, opts, "n", "two nodes + Redis via nginx",
                            partners_at=(node_a.host, nginx.ports[1]), stop=False)
                        rows += found
                        info["nginx_ports"] = nginx.ports
                        infos.append(info)
                    finally:
                        nginx.stop()
        finally:
            infos.append(finish_server(node_a, info_a))
            infos.append(finish_server(node_b, info_b))
    finally:
        left = forget_namespace(bus)
        if made_database is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{made_database}{suffix}").unlink(missing_ok=True)
    _split_per_message(rows)
    summary = _summarize(rows, common.repeat)
    print(f"\ncross-node: {args.pairs} pairs, each split over two nodes, {args.duration:g} s "
          f"per run, database {database}, bus {bus}")
    print(report.table(summary, COLUMNS))
    print("\nCPU per delivered message by process (µs):")
    print(report.table(summary, SPLIT_COLUMNS))
    targets = targets_of(summary)
    if targets:
        print("\ntargets (issue 5):")
        for t in targets:
            print(f"  {'met' if t['met'] else 'NOT met':8} {t['target']}: {t['measured']}")
    options = {k: v if isinstance(v, int | float | str | list | bool | None) else str(v)
               for k, v in vars(args).items()}
    return {"scenario": "cross-node", "options": options, "servers": infos, "runs": rows,
            "summary": summary, "targets": targets, "bus": bus, "database": database,
            "redis_keys_removed": left, "redis_pid": redis_pid, "pid": os.getpid(),
            "note": "Redis CPU counts everything Redis did meanwhile, other clients included"}
