"""Starting and stopping the server under test (chatserver or the echo baseline), each in
its own process, and reading its CPU and memory from /proc."""

import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procstat

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"listening on (\S+):(\d+)")
# What in a server's log shows a fault worth reporting.
PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bWARNING\b|Exception|Error:")
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0


class ServerError(RuntimeError):
    """The server under test failed to start or died."""


def raise_nofile_limit(wanted: int | None = None) -> tuple[int, int]:
    """Raise this process's open-file soft limit (to the hard limit, or ``wanted``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None or hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target == resource.RLIM_INFINITY:
        target = wanted or 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _raise_nofile_in_child() -> None:
    # Runs in the child between fork and exec: the server gets the hard limit as its own.
    raise_nofile_limit()


@dataclass
class ServerProcess:
    """One server under test; ``extra`` are other processes whose CPU counts with it
    (a database or Redis taking part), by name."""

    kind: str
    command: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    stop_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> dict[str, int]:
        return {self.kind: self.proc.pid, **self.extra}

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServerError(
                f"{self.kind} exited with {self.proc.returncode}; log {self.log_path}:\n"
                + self.log_tail()
            )

    def cpu(self) -> dict[str, procstat.CpuSample]:
        """CPU so far of the server and every extra process taking part."""
        self.check_alive()
        return procstat.cpu_of(self.pids)

    def main_thread_cpu(self) -> procstat.CpuSample:
        return procstat.main_thread_cpu(self.pid)

    def rss_kib(self) -> int:
        return procstat.rss_kib(self.pid)

    def peak_rss_kib(self) -> int:
        return procstat.peak_rss_kib(self.pid)

    def open_file_limit(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return int(line.split()[3])
        except (OSError, ValueError):
            return None
        return None

    def stop(self) -> None:
        """SIGTERM, then wait (the server logs everyone out); SIGKILL if it hangs."""
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.stop_seconds = round(time.monotonic() - started, 3)
        self.exit_code = self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self, keep: int = 20) -> dict[str, object]:
        """Lines of the log that show a fault (errors, warnings, tracebacks)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {"count": 0, "lines": []}
        bad = [line for line in text.splitlines() if PROBLEM.search(line)]
        return {"count": len(bad), "lines": bad[:keep]}


def _wait_listening(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        server.check_alive()
        match = LISTENING.search(server.log_path.read_bytes())
        if match:
            server.host, server.port = match.group(1).decode(), int(match.group(2))
            return
        time.sleep(0.05)
    server.proc.kill()
    raise ServerError(f"{server.kind} did not log 'listening on' within "
                      f"{START_TIMEOUT_SECONDS:.0f} s; log {server.log_path}")


def _start(kind: str, command: list[str], log_path: Path, extra: dict[str, int],
           cwd: Path = REPO) -> ServerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile_in_child,
        )
    server = ServerProcess(kind, command, proc, log_path, extra=dict(extra))
    try:
        _wait_listening(server)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise
    return server


# Passed to every `chatserver serve` (--server-arg), after the automatic ones.
EXTRA_SERVER_ARGS: list[str] = []


def automatic_server_args() -> list[str]:
    """Options the load needs where the server has them: all load comes from one address."""
    args = []
    if chatserver_supports("--connections-per-address"):
        args += ["--connections-per-address", "0"]
    # Each connection sends 100-150 requests/s at W = 8, over the default budget (100/s): the
    # budget is still checked per request, but refuses nothing, or its refusals are measured.
    if chatserver_supports("--request-rate"):
        args += ["--request-rate", "1000000", "--request-burst", "1000000"]
    # In `group`, the members away get a copy of every message: past the default limit of
    # waiting messages (10,000, reached in seconds) copies would be skipped, and a warning
    # logged, per message: the figures would measure that instead of storing.
    if chatserver_supports("--stored-limit"):
        args += ["--stored-limit", "1000000000"]
    # `sync` keeps 10,000 chats for a user away, from a sender who is a stranger to them, and
    # `group` writes an inbox entry per member as fast as it can: both measure storing.
    if chatserver_supports("--stranger-share"):
        args += ["--stranger-share", "0", "--stranger-messages-per-minute", "0"]
    if chatserver_supports("--group-entries-per-second"):
        args += ["--group-entries-per-second", "0"]
    # Thousands of users are registered from one address during set-up.
    if chatserver_supports("--registrations-per-minute"):
        args += ["--registrations-per-minute", "0", "--registrations-per-hour", "0"]
    return args


# The checkout whose chatserver is measured: `python -m chatserver` run there imports its
# package first (the current directory leads sys.path). --chatserver-dir changes it.
CHATSERVER_DIR = REPO


def start_chatserver(
    database: str,
    log_path: Path,
    *,
    extra_args: list[str] | None = None,
    extra: dict[str, int] | None = None,
) -> ServerProcess:
    command = [sys.executable, "-m", "chatserver", "serve", "--host", "127.0.0.1",
               "--port", "0", "--database", database, *automatic_server_args(),
               *EXTRA_SERVER_ARGS, *(extra_args or [])]
    return _start("chatserver", command, log_path, extra or {}, cwd=CHATSERVER_DIR)


def start_echo_server(log_path: Path, *, uvloop: bool) -> ServerProcess:
    command = [sys.executable, "-m", "benchmarks.echo_server", "--host", "127.0.0.1",
               "--port", "0", "--uvloop" if uvloop else "--asyncio"]
    return _start("echo-baseline", command, log_path, {})


_options_cache: dict[str, bool] = {}


def chatserver_supports(option: str) -> bool:
    """Whether ``chatserver serve --help`` lists ``option`` (e.g. --hash-cost)."""
    if option not in _options_cache:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "chatserver", "serve", "--help"],
                cwd=CHATSERVER_DIR, capture_output=True, timeout=30, check=False,
            ).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _options_cache[option] = re.search(rf"(^|\s){re.escape(option)}\b", out) is not None
    return _options_cache[option]
