"""examples/shop_chat.py runs (issue 17, "Done when"): the shop's customers get tokens from the
shop's own login, log in to the chat over WebSocket with them, chat; a forbidden word is
refused with errno 12; after_event fills the shop's own chat_log table, shown by its page."""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import chatserver
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop_chat.py"
LOGIN, ONE_CHAT = 1, 6


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shop_chat", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shop_chat"] = module
    spec.loader.exec_module(module)
    return module


class Customer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.seq, self.pushed = ws, 0, list[dict[str, Any]]()

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        await self.ws.send(json.dumps({**frame, "seq": self.seq}))
        while True:
            with anyio.fail_after(5):
                reply = dict(json.loads(await self.ws.recv()))
            if reply.get("seq") == self.seq:
                return reply
            self.pushed.append(reply)

    async def next_push(self) -> dict[str, Any]:
        if self.pushed:
            return self.pushed.pop(0)
        with anyio.fail_after(5):
            return dict(json.loads(await self.ws.recv()))


async def test_the_shop_example_logs_its_customers_in_filters_and_logs_their_chat(
    tmp_path: Path,
) -> None:
    shop_chat = load_example()
    shop_port, ws_port = free_port(), free_port()
    started = anyio.Event()

    async def ready(listening: chatserver.Listening) -> None:
        assert listening.web_port == ws_port
        started.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(
            lambda: shop_chat.run(tmp_path, shop_port=shop_port, chat_ws_port=ws_port, ready=ready)
        )
        with anyio.fail_after(20):
            await started.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{shop_port}") as shop:
            wrong = await shop.post("/login", json={"name": "alice", "password": "nope"})
            assert wrong.status_code == 401
            tokens = {}
            for name, password in shop_chat.CUSTOMERS.items():
                answer = await shop.post("/login", json={"name": name, "password": password})
                tokens[name] = answer.json()["token"]

            url = f"ws://127.0.0.1:{ws_port}/ws"
            async with connect(url) as alice_ws, connect(url) as bob_ws:
                alice, bob = Customer(alice_ws), Customer(bob_ws)
                refused = await alice.request({"msgid": LOGIN, "token": "not the shop's"})
                assert refused["errno"] == 1
                logged_in = await alice.request({"msgid": LOGIN, "token": tokens["alice"]})
                assert logged_in["errno"] == 0, logged_in
                bob_in = await bob.request({"msgid": LOGIN, "token": tokens["bob"]})
                assert bob_in["errno"] == 0, bob_in
                bob_id = bob_in["id"]

                sent = await alice.request(
                    {"msgid": ONE_CHAT, "toid": bob_id, "msg": "is the blue teapot in stock?"}
                )
                assert sent["errno"] == 0, sent
                got = await bob.next_push()
                assert (got["msgid"], got["name"], got["msg"]) == (
                    ONE_CHAT,
                    "alice",
                    "is the blue teapot in stock?",
                )
                bad = await alice.request(
                    {"msgid": ONE_CHAT, "toid": bob_id, "msg": "try this refund-scam"}
                )
                assert bad["errno"] == 12 and "does not allow" in bad["errmsg"], bad

            with anyio.fail_after(5):
                while not (log := (await shop.get("/chat-log")).json()):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            assert log == [
                {
                    "msg_id": sent["msg_id"],
                    "sender": "alice",
                    "recipient_id": bob_id,
                    "text": "is the blue teapot in stock?",
                }
            ]
        tasks.cancel_scope.cancel()
