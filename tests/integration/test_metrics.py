"""`serve --metrics-port` serves Prometheus metrics that follow what happens."""

import re
import secrets
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import HOST, Chat, ServerProcess, chats_on, free_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_follow_sessions_messages_requests_and_errors(tmp_path: Path) -> None:
    metrics_port = free_port()
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "metrics.log",
        ["--metrics-port", str(metrics_port)],
    ).start()
    chat = Chat(server)
    try:
        alice, bob, carol = chat.users(3)
        ca = chat.online(alice)
        chat.online(bob)
        for _ in range(3):
            ca.ok({"msgid": 6, "toid": bob.id, "msg": "live"})
        ca.ok({"msgid": 6, "toid": carol.id, "msg": "kept for later"})
        ca.err({"msgid": 6, "toid": 999_999, "msg": "nobody"}, 4)
        samples = scrape(metrics_port)
        assert samples["chatserver_sessions_online"] == 2
        assert samples['chatserver_messages_routed_total{outcome="local"}'] == 3
        # every message in the recipient's inbox and the sender's: 4 messages, 8 entries
        assert samples['chatserver_messages_routed_total{outcome="kept"}'] == 8
        assert samples["chatserver_inbox_batch_entries_sum"] == 8
        assert samples['chatserver_request_seconds_count{msgid="6"}'] == 5
        assert samples['chatserver_errors_total{errno="4"}'] == 1
        assert samples['chatserver_dependency_seconds_count{dependency="database"}'] > 0
        assert any(re.match(r"chatserver_offline_queue_at_login_count", k) for k in samples)
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()


def test_a_node_in_a_cluster_counts_cross_node_messages_and_times_redis(tmp_path: Path) -> None:
    metrics_port = free_port()
    bus = f"redis://127.0.0.1:6379/0?namespace=test-{secrets.token_hex(4)}"
    database = f"sqlite:///{tmp_path / 'cluster.db'}"
    a = ServerProcess(database, tmp_path / "a.log",
                      ["--bus", bus, "--node-id", "a", "--metrics-port", str(metrics_port)])
    b = ServerProcess(database, tmp_path / "b.log", ["--bus", bus, "--node-id", "b"])
    with chats_on(a.start(), b.start()) as (on_a, on_b):
        alice, bob = on_a.users(2)
        ca = on_a.online(alice)
        cb = on_b.online(bob)
        for n in range(2):
            ca.ok({"msgid": 6, "toid": bob.id, "msg": f"across {n}"})
            cb.expect({"msgid": 6, "msg": f"across {n}"})
        samples = scrape(metrics_port)
        assert samples['chatserver_messages_routed_total{outcome="cross-node"}'] == 2
        assert samples['chatserver_dependency_seconds_count{dependency="redis"}'] >= 2
        assert samples["chatserver_sessions_online"] == 1
