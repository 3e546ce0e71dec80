"""The table printed at the end of a scenario, and the JSON file written with it."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import get

RESULTS = Path(__file__).resolve().parent / "results"

Column = tuple[str, str, str]  # header, key (dotted), format


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = get(row, key)
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    cells = [[_cell(row, key, fmt) for _, key, fmt in columns] for row in rows]
    headers = [header for header, _, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        padded = [v.ljust(w) if i == 0 else v.rjust(w)
                  for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join(
        ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(headers), separator, *(line(r) for r in cells)])


def environment() -> dict[str, Any]:
    from benchmarks import servers

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=servers.CHATSERVER_DIR,
                                  capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    try:
        import uvloop

        uvloop_version: str | None = uvloop.__version__
    except ImportError:
        uvloop_version = None
    import os

    return {
        "python": sys.version.split()[0],
        "uvloop": uvloop_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "chatserver_dir": str(servers.CHATSERVER_DIR),
        "commit": git("rev-parse", "--short", "HEAD"),
        # Uncommitted changes in the server's package: the figures are of the working tree.
        "dirty": bool(git("status", "--porcelain", "--", "chatserver")),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def default_json_path(scenario: str) -> Path:
    return RESULTS / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
