"""What every scenario shares: running an event loop, a server's session, the options."""

import asyncio
import gc
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.servers import ServerProcess

T = TypeVar("T")


@dataclass
class Common:
    """Options every scenario takes."""

    database: str = "memory://"
    uvloop: bool = True  # for the load generator
    drain: float = 1.0
    repeat: int = 1
    concurrency: int = 50  # setups (register + login) at a time
    msg_bytes: int = 32
    settle: float = 0.5
    wait_quiet: float = 0.0  # seconds to wait for other programs to calm down per phase
    also_measure: list[str] = field(default_factory=list)
    log_dir: Path = Path("benchmarks/results/logs")
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    token: str = field(default_factory=lambda: secrets.token_hex(3))

    def log_path(self, scenario: str, what: str) -> Path:
        return self.log_dir / f"{scenario}-{self.stamp}-{what}.log"

    def prefix(self, what: str) -> str:
        """A user-name prefix unique to this run (names must be new on a kept database)."""
        return f"b{self.token}{what}"


def run_loop(main: Callable[[], Coroutine[Any, Any, T]], *, use_uvloop: bool) -> T:
    if use_uvloop:
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


@contextmanager
def no_gc() -> Iterator[None]:
    """The load generator's own collector stays out of measured phases."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def server_info(server: ServerProcess) -> dict[str, Any]:
    return {
        "kind": server.kind,
        "command": " ".join(server.command),
        "pid": server.pid,
        "log": str(server.log_path),
        "open_file_limit": server.open_file_limit() if server.proc.poll() is None else None,
        "extra_processes": server.extra,
    }


def finish_server(server: ServerProcess, info: dict[str, Any]) -> dict[str, Any]:
    """Stop the server and add how it ended and what its log says to ``info``."""
    server.stop()
    info["exit_code"] = server.exit_code
    info["stop_seconds"] = server.stop_seconds
    info["log_problems"] = server.log_problems()
    return info


def padding(msg_bytes: int, used: int) -> bytes:
    return b"x" * max(0, msg_bytes - used)
