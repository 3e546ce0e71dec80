"""A 20 MiB file up and down over loopback (issue 14): a server process on SQLite and a folder,
FILE_UPLOAD then PUT, FILE_URL then GET, several rounds; MB/s each way and the server's RSS
before and after. Run: .venv/bin/python -m benchmarks.file_transfer [ROUNDS]"""

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


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        port, web = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        server = subprocess.Popen(
            [sys.executable, "-m", "chatserver", "serve", "--host", HOST, "--port", str(port),
             "--ws-port", str(web), "--database", f"sqlite:///{directory}/chat.db",
             "--hash-cost", "2", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection((HOST, port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            line = Line(port)
            user = line.request({"msgid": 4, "name": "bench", "password": "pw"})["id"]
            line.request({"msgid": 1, "id": user, "password": "pw"})
            data = os.urandom(SIZE)
            expected = hashlib.sha256(data).hexdigest()
            rss_start = rss_kib(server.pid)
            rss_peak = rss_start
            ups, downs, up_cpu, down_cpu = [], [], [], []
            for _ in range(rounds):
                ack = line.request({"msgid": 33, "name": "f.bin", "size": SIZE,
                                    "mime": "application/octet-stream"})
                conn = http.client.HTTPConnection(HOST, web, timeout=60)
                cpu = cpu_seconds(server.pid)
                started = time.perf_counter()
                conn.request("PUT", str(ack["upload_url"]), body=data)
                assert conn.getresponse().read() and True
                ups.append(SIZE / (time.perf_counter() - started) / 1e6)
                up_cpu.append(cpu_seconds(server.pid) - cpu)
                conn.close()
                rss_peak = max(rss_peak, rss_kib(server.pid))
                url = line.request({"msgid": 34, "file_id": ack["file_id"]})["url"]
                conn = http.client.HTTPConnection(HOST, web, timeout=60)
                cpu = cpu_seconds(server.pid)
                started = time.perf_counter()
                conn.request("GET", str(url))
                got = conn.getresponse().read()
                downs.append(SIZE / (time.perf_counter() - started) / 1e6)
                down_cpu.append(cpu_seconds(server.pid) - cpu)
                conn.close()
                assert hashlib.sha256(got).hexdigest() == expected
                rss_peak = max(rss_peak, rss_kib(server.pid))
            print(f"{rounds} rounds of 20 MiB on loopback: upload median "
                  f"{statistics.median(ups):.0f} MB/s (best {max(ups):.0f}), download median "
                  f"{statistics.median(downs):.0f} MB/s (best {max(downs):.0f}); server RSS "
                  f"{rss_start / 1024:.1f} MiB before, "
                  f"peak +{(rss_peak - rss_start) / 1024:.1f} MiB; "
                  f"server CPU per 20 MiB: upload {statistics.median(up_cpu) * 1000:.0f} ms, "
                  f"download {statistics.median(down_cpu) * 1000:.0f} ms")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
