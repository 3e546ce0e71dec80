"""Durable webhooks (issue 17.5): the receiver is down while 1,000 messages are sent; once it
is up, every event_id arrives (duplicates allowed, none missing), in order per conversation,
every signature verifies, and the outbox is empty. On SQLite and on MySQL."""

import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
import pytest
import uvicorn

import chatserver
from chatserver.application.webhooks import list_dead
from chatserver.domain.ports import Transaction
from tests.integration.conftest import free_port
from tests.unit.conftest import FAST_HASHER
from tests.unit.contract.mysql_server import MYSQL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "webhook test secret"
PAIRS = 4
PER_PAIR = 250  # 1,000 messages in all


class Receiver:
    """A loopback HTTP server that keeps every POST it is given, as an ASGI app."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, str]] = []  # (body, signature header)
        self.arrived = anyio.Event()

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = self.status_for(body)
        if status < 300:
            headers = dict(scope["headers"])
            self.posts.append((body, headers.get(b"x-chatserver-signature", b"").decode()))
            self.arrived.set()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def status_for(self, body: bytes) -> int:
        return 204


@asynccontextmanager
async def serving(app: Receiver, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
        )
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 (uvicorn tells no other way)
            await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


async def waiting_rows(app: chatserver.ChatApp) -> list[dict[str, Any]]:
    def read(tx: Transaction) -> list[str]:
        return [row.body for row in tx.webhooks.pending(100_000)]

    return [orjson.loads(body) for body in await app.node.uow.run(read)]


@pytest.fixture(params=["sqlite", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mysql":
        return MYSQL.new_database()
    return f"sqlite:///{tmp_path / 'chat.db'}"


async def test_a_receiver_down_while_1000_messages_are_sent_gets_every_event_once_up(
    database: str,
) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    limits = chatserver.WebhookLimits(retry_seconds=0.2, retry_max_seconds=1.0, timeout_seconds=2)
    config = chatserver.Config(
        database=database,
        port=0,
        webhook=f"http://127.0.0.1:{port}/hook",
        webhook_secret=SECRET,
        webhook_limits=limits,
    )
    receiver = Receiver()
    async with chatserver.open_node(config, hasher=FAST_HASHER) as app:
        suffix = str(time.monotonic_ns())[-6:]
        users = [await app.create_user(f"w{i}_{suffix}", "password") for i in range(2 * PAIRS)]
        clients = []
        for user in users:
            client = app.connect()
            await client.request(chatserver.Login("password", user_id=user.id))
            clients.append(client)

        sent: dict[int, list[int]] = {}  # sender -> msg_ids, in order

        async def talk(sender: int) -> None:
            recipient = users[sender + PAIRS].id
            for n in range(PER_PAIR):
                result = await clients[sender].request(
                    chatserver.SendDirectMessage(recipient, f"message {n}")
                )
                sent.setdefault(sender, []).append(result.msg_id)

        started = time.perf_counter()
        async with anyio.create_task_group() as senders:
            for sender in range(PAIRS):
                senders.start_soon(talk, sender)
        send_seconds = time.perf_counter() - started
        await anyio.sleep(1.5)  # the deliverer tries, and fails, meanwhile
        waiting = await waiting_rows(app)
        direct = [row for row in waiting if row["type"] == "direct"]
        assert len(direct) == PAIRS * PER_PAIR, "every message waits in the outbox"
        expected = {row["event_id"] for row in waiting}
        assert not receiver.posts

        started = time.perf_counter()
        async with serving(receiver, port):
            with anyio.fail_after(60):
                while expected - {orjson.loads(body)["event_id"] for body, _ in receiver.posts}:
                    await receiver.arrived.wait()
                    receiver.arrived = anyio.Event()
            caught_up = time.perf_counter() - started
            with anyio.fail_after(10):
                while await waiting_rows(app):  # noqa: ASYNC110 (polling the database)
                    await anyio.sleep(0.05)
        for client in clients:
            await client.close()

    bodies = [orjson.loads(body) for body, _ in receiver.posts]
    print(
        f"\n{PAIRS * PER_PAIR} messages sent in {send_seconds:.2f} s while the receiver was "
        f"down; {len(expected)} events delivered {caught_up:.2f} s after it came up "
        f"({len(bodies) - len({b['event_id'] for b in bodies})} duplicates)"
    )
    for body, signature in receiver.posts:
        assert chatserver.verify_webhook(SECRET, body, signature)
    # In order per conversation: each pair's messages first arrive in the order sent.
    for sender, msg_ids in sent.items():
        arrived: list[int] = []
        for body in bodies:
            data = body["data"]
            mine = body["type"] == "direct" and data["sender_id"] == users[sender].id
            if mine and data["msg_id"] not in arrived:
                arrived.append(data["msg_id"])
        assert arrived == msg_ids


async def hang_up_never(stream: anyio.abc.SocketStream) -> None:
    """A receiver that takes the connection and the request, and never answers."""
    async with stream:
        await anyio.sleep_forever()


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines())
        if not name.startswith("#")
    }


async def test_a_receiver_that_never_answers_costs_the_chat_nothing_and_shows_in_metrics() -> None:
    """The abuse: the receiver accepts connections and never replies. Each POST times out; the
    conversation backs off; messages are still accepted at once, and the metrics show the
    outbox growing old."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    limits = chatserver.WebhookLimits(timeout_seconds=0.5, retry_seconds=0.5)
    heard: list[chatserver.HookEvent] = []

    async def after_event(event: chatserver.HookEvent) -> None:
        heard.append(event)

    config = chatserver.Config(
        database="memory://",
        port=0,
        metrics_port=free_port(),
        webhook=f"http://127.0.0.1:{port}/hook",
        webhook_secret=SECRET,
        webhook_limits=limits,
        hooks=chatserver.Hooks(after_event=after_event),
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, hang_up_never)
        async with chatserver.open_node(config, hasher=FAST_HASHER) as app:
            listening = await app.start_serving()
            alice, bob = (
                await app.create_user("alice", "password"),
                await app.create_user("bob", "password"),
            )
            client = app.connect()
            await client.request(chatserver.Login("password", user_id=alice.id))
            latencies = []
            for n in range(200):
                started = time.perf_counter()
                await client.request(chatserver.SendDirectMessage(bob.id, f"m{n}"))
                latencies.append(time.perf_counter() - started)
                if n % 50 == 0:
                    await anyio.sleep(0.3)  # let POSTs hang meanwhile
            await anyio.sleep(1.0)
            assert listening.metrics_port is not None
            samples = await anyio.to_thread.run_sync(scrape, listening.metrics_port)
            await client.close()
        tasks.cancel_scope.cancel()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"\nwith a receiver that never answers: chat p50 {p50 * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms; outbox {samples['chatserver_webhook_outbox_rows']:.0f} rows, "
        f"oldest {samples['chatserver_webhook_outbox_oldest_seconds']:.1f} s"
    )
    assert p99 < 0.5
    assert samples["chatserver_webhook_outbox_rows"] == 202  # 2 accounts, 200 messages
    assert samples["chatserver_webhook_outbox_oldest_seconds"] > 1.0
    assert samples['chatserver_webhook_posts_total{outcome="failed"}'] >= 1
    assert samples['chatserver_webhook_posts_total{outcome="delivered"}'] == 0
    assert samples["chatserver_after_event_queue"] == 0  # after_event kept up meanwhile
    assert samples['chatserver_after_event_lost_total{reason="dropped"}'] == 0
    assert len(heard) == 202


class Refusing(Receiver):
    """Answers 422 to every event whose message says "poison"; takes the rest."""

    def status_for(self, body: bytes) -> int:
        return 422 if b"poison" in body else 204


async def test_an_event_the_receiver_keeps_refusing_is_set_aside_and_the_chat_goes_on(
    tmp_path: Path,
) -> None:
    port = free_port()
    limits = chatserver.WebhookLimits(
        retry_seconds=0.05, retry_max_seconds=0.1, dead_after_rejections=3
    )
    config = chatserver.Config(
        database=f"sqlite:///{tmp_path / 'chat.db'}",
        port=0,
        webhook=f"http://127.0.0.1:{port}/hook",
        webhook_secret=SECRET,
        webhook_limits=limits,
    )
    receiver = Refusing()
    async with serving(receiver, port), chatserver.open_node(config, hasher=FAST_HASHER) as app:
        alice = await app.create_user("alice", "password")
        bob = await app.create_user("bob", "password")
        client = app.connect()
        await client.request(chatserver.Login("password", user_id=alice.id))
        for text in ("first", "poison", "second"):
            await client.request(chatserver.SendDirectMessage(bob.id, text))
        started = time.perf_counter()
        with anyio.fail_after(20):
            while not any(b'"second"' in body for body, _ in receiver.posts):
                await receiver.arrived.wait()
                receiver.arrived = anyio.Event()
        waited = time.perf_counter() - started
        with anyio.fail_after(10):
            while await waiting_rows(app):  # noqa: ASYNC110 (polling the database)
                await anyio.sleep(0.05)
        dead = await list_dead(app.node.uow)
        await client.close()

    texts = [
        orjson.loads(body)["data"]["text"]
        for body, _ in receiver.posts
        if orjson.loads(body)["type"] == "direct"
    ]
    print(f"\nthe event after the refused one arrived {waited:.2f} s after the sends")
    assert texts == ["first", "second"]
    assert [orjson.loads(d.body)["data"]["text"] for d in dead] == ["poison"]
    assert dead[0].reason == "refused 3 times (last: HTTP 422)"
