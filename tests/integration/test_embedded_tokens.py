"""The embedder's users and rules over real TCP (issue 17 items 3 and 4): a LOGIN with the wire
field `token` checked by the app's authenticator (the account made on first sight), a refused
token errno 1, a token on a server without an authenticator errno 7, a before_send hook's
refusal errno 12 with its reason, and after_event hearing the chat after its commit."""

import asyncio
import json
from typing import Any

import pytest

import chatserver

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
LOGIN, ONE_CHAT = 1, 6


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.seq = reader, writer, 0

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        self.writer.write(json.dumps({**frame, "seq": self.seq}).encode() + b"\n")
        await self.writer.drain()
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            assert line, "the server closed the connection"
            reply = dict(json.loads(line))
            if reply.get("seq") == self.seq:
                return reply

    def close(self) -> None:
        self.writer.close()


async def app_tokens(token: str) -> str | None:
    return {"t-alice": "alice", "t-bob": "bob"}.get(token)


async def no_swearing(out: chatserver.Outgoing) -> chatserver.Allow | chatserver.Reject:
    return chatserver.Reject("mind your words") if "swear" in out.text else chatserver.Allow()


async def scenario() -> dict[str, Any]:
    heard: list[chatserver.HookEvent] = []

    async def record(event: chatserver.HookEvent) -> None:
        heard.append(event)

    hooks = chatserver.Hooks(before_send=no_swearing, after_event=record)
    config = chatserver.Config(
        database="memory://", port=0, authenticator=app_tokens, hooks=hooks
    )
    seen: dict[str, Any] = {}
    async with chatserver.open_node(config) as node:
        listening = await node.start_serving()
        alice = Raw(*await asyncio.open_connection(HOST, listening.port))
        bob = Raw(*await asyncio.open_connection(HOST, listening.port))
        stranger = Raw(*await asyncio.open_connection(HOST, listening.port))
        seen["alice"] = await alice.request({"msgid": LOGIN, "token": "t-alice"})
        seen["bob"] = await bob.request({"msgid": LOGIN, "token": "t-bob", "name": "bob"})
        seen["forged"] = await stranger.request({"msgid": LOGIN, "token": "forged"})
        bob_id = seen["bob"]["id"]
        seen["swear"] = await alice.request({"msgid": ONE_CHAT, "toid": bob_id, "msg": "swear"})
        seen["fine"] = await alice.request({"msgid": ONE_CHAT, "toid": bob_id, "msg": "hello"})
        for _ in range(100):
            if any(isinstance(e, chatserver.DirectMessage) for e in heard):
                break
            await asyncio.sleep(0.01)
        seen["heard"] = [type(e).__name__ for e in heard]
        for client in (alice, bob, stranger):
            client.close()
        await node.stop_serving()
    plain = chatserver.Config(database="memory://", port=0)
    async with chatserver.open_node(plain) as node:
        listening = await node.start_serving()
        client = Raw(*await asyncio.open_connection(HOST, listening.port))
        seen["no_authenticator"] = await client.request(
            {"msgid": LOGIN, "token": "t-alice", "name": "alice"}
        )
        client.close()
        await node.stop_serving()
    return seen


def test_token_logins_and_hooks_over_tcp() -> None:
    seen = asyncio.run(scenario())
    assert seen["alice"]["errno"] == 0 and seen["alice"]["name"] == "alice"
    assert seen["bob"]["errno"] == 0 and seen["bob"]["name"] == "bob"
    assert seen["forged"]["errno"] == 1
    assert seen["swear"]["errno"] == 12 and seen["swear"]["errmsg"] == "mind your words"
    assert seen["fine"]["errno"] == 0
    assert seen["heard"].count("AccountCreated") == 2
    assert seen["heard"].count("DirectMessage") == 1
    assert seen["no_authenticator"]["errno"] == 7
