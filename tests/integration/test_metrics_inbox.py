"""The inbox on the metrics endpoint (issue 12 item 6): group-commit batches (entries per
transaction, and so the transactions), SYNC and HISTORY latency."""

from pathlib import Path

import pytest

from tests.integration.conftest import Chat, ServerProcess, free_port
from tests.integration.test_metrics import scrape

pytestmark = pytest.mark.integration


def test_inbox_batches_and_sync_and_history_latency_are_scraped_after_traffic(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "metrics.log",
        ["--metrics-port", str(metrics_port)],
    ).start()
    chat = Chat(server)
    try:
        alice, bob = chat.users(2)
        ca = chat.online(alice)
        before = scrape(metrics_port)
        # Sent at once; a connection's requests are served in turn, so here each chat is
        # likely a transaction of its own (batches gather across connections).
        seqs = []
        for n in range(20):
            seq = ca.next_seq()
            seqs.append(seq)
            ca.send({"msgid": 6, "toid": bob.id, "msg": f"kept {n}", "seq": seq})
        for seq in seqs:
            reply = ca.expect({"msgid": 11, "seq": seq})
            assert reply["errno"] == 0, reply
        cb = chat.online(bob)
        synced = cb.ok({"msgid": 20, "since": 0, "limit": 500})
        assert len(synced["msgs"]) == 20
        page = cb.ok({"msgid": 21, "with": alice.id, "limit": 5})
        assert len(page["msgs"]) == 5 and page["more"] is True
        cb.ok({"msgid": 21, "with": alice.id, "before": page["msgs"][0]["pos"], "limit": 5})

        after = scrape(metrics_port)
        batch = "chatserver_inbox_batch_entries"
        entries = after[f"{batch}_sum"] - before.get(f"{batch}_sum", 0)
        transactions = after[f"{batch}_count"] - before.get(f"{batch}_count", 0)
        # 20 chats, each kept in bob's inbox and alice's own: 40 entries.
        assert entries == 40, after
        assert 1 <= transactions <= 40 + 2  # (+ marks kept at bob's login)
        assert after[f'{batch}_bucket{{le="+Inf"}}'] == after[f"{batch}_count"]
        print(f"\n40 entries in {transactions:.0f} transactions; buckets: "
              + ", ".join(f"{k.split('le=')[1][:-1]}: {v:.0f}" for k, v in after.items()
                          if k.startswith(f"{batch}_bucket")))

        latency = "chatserver_request_seconds"
        assert after[f'{latency}_count{{msgid="20"}}'] == 1
        assert after[f'{latency}_count{{msgid="21"}}'] == 2
        for msgid in ("20", "21"):
            seconds = after[f'{latency}_sum{{msgid="{msgid}"}}']
            assert 0 < seconds < 5, (msgid, seconds)
            assert after[f'{latency}_bucket{{le="+Inf",msgid="{msgid}"}}'] == after[
                f'{latency}_count{{msgid="{msgid}"}}'
            ]
    finally:
        chat.close_all()
        server.stop()
        server.assert_no_traceback()
