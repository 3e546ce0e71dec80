"""A 20 MiB file up and down over loopback (issue 14): a server process on SQLite and a folder,
FILE_UPLOAD then PUT, FILE_URL then GET, several rounds; MB/s each way and the server's RSS
before and after. Run: .venv/bin/python -m benchmarks.file_transfer [ROUNDS] [--chatserver-dir
DIR] (DIR: another checkout, e.g. the commit before a change, measured round for round beside
this tree)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
SIZE = 20 * MIB
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Line:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.file = self.sock.makefile("rb")

    def request(self, frame: dict[str, object]) -> dict[str, object]:
        self.sock.sendall(json.dumps(frame).encode() + b"\n")
        while True:
            reply = json.loads(self.file.readline())
            if reply["msgid"] in (2, 5, 11):
                return reply  # type: ignore[no-any-return]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One chatserver process (from the checkout in cwd) on SQLite and a folder, a user
    logged in on it."""

    def __init__(self, directory: str, cwd: Path) -> None:
        self.port, self.web = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatserver", "serve", "--host", HOST, "--port",
             str(self.port), "--ws-port", str(self.web), "--database",
             f"sqlite:///{directory}/chat.db", "--hash-cost", "2", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
        )
        for _ in range(100):
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.line = Line(self.port)
        user = self.line.request({"msgid": 4, "name": "bench", "password": "pw"})["id"]
        self.line.request({"msgid": 1, "id": user, "password": "pw"})
        self.rss_start = self.rss_peak = rss_kib(self.proc.pid)
        self.ups: list[float] = []
        self.downs: list[float] = []
        self.up_cpu = self.down_cpu = 0.0

    def round(self, data: bytes, expected: str) -> None:
        pid = self.proc.pid
        ack = self.line.request({"msgid": 33, "name": "f.bin", "size": len(data),
                                 "mime": "application/octet-stream"})
        conn = http.client.HTTPConnection(HOST, self.web, timeout=60)
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        conn.request("PUT", str(ack["upload_url"]), body=data)
        response = conn.getresponse()
        assert response.status == 201 and response.read()
        self.ups.append(len(data) / (time.perf_counter() - started) / 1e6)
        self.up_cpu += cpu_seconds(pid) - cpu
        conn.close()
        self.rss_peak = max(self.rss_peak, rss_kib(pid))
        url = self.line.request({"msgid": 34, "file_id": ack["file_id"]})["url"]
        conn = http.client.HTTPConnection(HOST, self.web, timeout=60)
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        conn.request("GET", str(url))
        got = conn.getresponse().read()
        self.downs.append(len(data) / (time.perf_counter() - started) / 1e6)
        self.down_cpu += cpu_seconds(pid) - cpu
        conn.close()
        assert hashlib.sha256(got).hexdigest() == expected
        self.rss_peak = max(self.rss_peak, rss_kib(pid))

    def report(self, name: str) -> str:
        rounds = len(self.ups)
        return (f"{name}: upload median {statistics.median(self.ups):.0f} MB/s (best "
                f"{max(self.ups):.0f}), download median {statistics.median(self.downs):.0f} "
                f"MB/s (best {max(self.downs):.0f}); server RSS {self.rss_start / 1024:.1f} MiB "
                f"before, peak +{(self.rss_peak - self.rss_start) / 1024:.1f} MiB; server CPU "
                f"per 20 MiB (mean): upload {self.up_cpu / rounds * 1000:.0f} ms, download "
                f"{self.down_cpu / rounds * 1000:.0f} ms")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main(rounds: int, baseline: Path | None) -> None:
    """rounds of each; with baseline (a checkout, e.g. `git archive` of the commit before a
    change), a server from there too, the two taking turns round by round."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "a").mkdir()
        Path(directory, "b").mkdir()
        servers: dict[str, Server] = {}
        try:
            if baseline is not None:
                servers[f"before ({baseline})"] = Server(f"{directory}/b", baseline)
            servers["this tree"] = Server(f"{directory}/a", repo)
            base = os.urandom(SIZE)
            load = os.getloadavg()[0]
            for n in range(rounds):
                # New bytes each round: the same again would be stored once, not written.
                data = n.to_bytes(8, "big") + base[8:]
                expected = hashlib.sha256(data).hexdigest()
                for server in servers.values():
                    server.round(data, expected)
            print(f"{rounds} rounds of 20 MiB on loopback (load average {load:.1f} before, "
                  f"{os.getloadavg()[0]:.1f} after):")
            for name, server in servers.items():
                print("  " + server.report(name))
        finally:
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rounds", type=int, nargs="?", default=5)
    parser.add_argument("--chatserver-dir", type=Path, default=None, metavar="DIR",
                        help="a checkout to measure beside this tree, round for round")
    args = parser.parse_args()
    main(args.rounds, args.chatserver_dir)
