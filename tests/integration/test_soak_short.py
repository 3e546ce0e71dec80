"""The soak run of tests/soak, short: 30 receipting clients for 10 seconds against a server of
its own (memory://). `python -m tests.soak` is the full one (200 clients, two minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak import Options, run

pytestmark = pytest.mark.integration


def test_short_soak_loses_nothing_and_stays_clean(tmp_path: Path) -> None:
    report = run(Options(clients=30, seconds=10.0, rss_every=2.0, seed=7, log_dir=tmp_path))
    assert report.ok, "\n".join(report.lines)
