"""A program of its own embeds the node: on its own asyncio loop, beside its own server, it
opens a node, starts the chat's listeners from code, lets an in-process client and a raw TCP
client chat, then stops the listeners and the node cleanly (issue 17, item 2)."""

import asyncio
import contextlib
import json
import socket
from typing import Any

import pytest

import chatserver
from tests.integration.conftest import free_port
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


class RawClient:
    """The protocol by hand, as any client in any language speaks it: JSON lines over TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.seq = reader, writer, 0
        self.pushed: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> "RawClient":
        return cls(*await asyncio.open_connection(HOST, port))

    async def send(self, frame: dict[str, Any]) -> int:
        self.seq += 1
        self.writer.write(json.dumps({**frame, "seq": self.seq}).encode() + b"\n")
        await self.writer.drain()
        return self.seq

    async def next_frame(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line, "the server closed the connection"
        return dict(json.loads(line))

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The reply to frame; pushes that come first are kept in pushed."""
        seq = await self.send(frame)
        while True:
            reply = await self.next_frame()
            if reply.get("seq") == seq:
                assert reply["errno"] == 0, reply
                return reply
            self.pushed.append(reply)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def own_status_server(node: chatserver.ChatApp) -> asyncio.Server:
    """The embedding program's own server: one line saying how many users are online."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"online {len(node.node.sessions)}\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, HOST, 0)


async def ask_status(port: int) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    line = await reader.readline()
    writer.close()
    return line.decode().strip()


async def embedding_program() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    config = chatserver.Config(database="memory://", port=0)
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        status = await own_status_server(node)
        status_port = status.sockets[0].getsockname()[1]
        listening = await node.start_serving()
        seen["listening"] = listening

        alice = node.connect()
        alice_id = (await alice.request(chatserver.Register("alice", "pw"))).user_id
        await alice.request(chatserver.Login("pw", user_id=alice_id))

        bob = await RawClient.connect(listening.port)
        bob_id = (await bob.request({"msgid": 4, "name": "bob", "password": "pw"}))["id"]
        await bob.request({"msgid": 1, "id": bob_id, "password": "pw"})
        seen["status while both are online"] = await ask_status(status_port)

        accepted = await alice.request(chatserver.SendDirectMessage(bob_id, "hi bob"))
        while not bob.pushed:
            bob.pushed.append(await bob.next_frame())
        seen["bob got"] = bob.pushed.pop(0)
        seen["alice's msg_id"] = accepted.msg_id

        await bob.request({"msgid": 6, "toid": alice_id, "msg": "hi alice"})
        seen["alice got"] = await asyncio.wait_for(alice.next_event(), 5)

        await node.stop_serving()
        seen["bob after stop"] = await bob.reader.read()  # the server closed bob's connection
        try:
            await RawClient.connect(listening.port)
            seen["port after stop"] = "open"
        except OSError:
            seen["port after stop"] = "closed"
        # The embedding program's own server goes on; so does the in-process client.
        seen["status after stop"] = await ask_status(status_port)
        await alice.request(chatserver.Ping())
        await bob.close()
        status.close()
        await status.wait_closed()
    seen["sessions after the block"] = len(node.node.sessions)
    return seen


def test_a_program_embeds_the_node_beside_its_own_server_and_stops_it_cleanly() -> None:
    seen = asyncio.run(embedding_program())
    listening = seen["listening"]
    assert listening.host == HOST and listening.port > 0
    assert listening.web_port is None and not listening.tls
    assert seen["status while both are online"] == "online 2"
    got = seen["bob got"]
    assert (got["msgid"], got["name"], got["msg"]) == (6, "alice", "hi bob")
    assert got["msg_id"] == seen["alice's msg_id"]
    kept = seen["alice got"]  # a message comes at its place (pos) in alice's inbox
    assert isinstance(kept, chatserver.Kept) and kept.pos >= 1
    assert isinstance(kept.delivery, chatserver.DirectMessage)
    assert (kept.delivery.sender_name, kept.delivery.text) == ("bob", "hi alice")
    assert seen["bob after stop"] == b""  # logged out, and the connection closed
    assert seen["port after stop"] == "closed"
    assert seen["status after stop"] == "online 1"  # alice, in-process, is still logged in
    assert seen["sessions after the block"] == 0


async def serve_and_fail(config: chatserver.Config) -> list[int]:
    """A block that raises: the listeners stop at once and the error comes out as it was."""
    ports: list[int] = []
    with pytest.raises(RuntimeError, match="the embedding program failed"):
        async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
            listening = await node.start_serving("anyio")
            ports += [listening.port, listening.web_port or 0]
            raise RuntimeError("the embedding program failed")
    return ports


def test_a_failing_block_stops_the_listeners_and_raises_its_own_error() -> None:
    config = chatserver.Config(database="memory://", port=0, ws_port=0)
    ports = asyncio.run(serve_and_fail(config))
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection((HOST, port), timeout=2).close()


async def start_on_a_taken_port(tcp_port: int, taken: int) -> tuple[str, int, bool]:
    config = chatserver.Config(database="memory://", port=tcp_port, ws_port=taken)
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        with pytest.raises(chatserver.ConfigError) as refused:
            await node.start_serving()
        # The TCP port, taken before the web port failed, was let go again.
        try:
            await RawClient.connect(tcp_port)
            tcp_left_open = True
        except OSError:
            tcp_left_open = False
        node.config.ws_port = None
        listening = await node.start_serving()
        return str(refused.value), listening.port, tcp_left_open


def test_a_port_in_use_is_one_config_error_and_leaves_nothing_listening() -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        taken = holder.getsockname()[1]
        tcp_port = free_port()
        message, port, tcp_left_open = asyncio.run(start_on_a_taken_port(tcp_port, taken))
    assert message == (f"port {taken} on {HOST} is already in use (--ws-port): stop what uses "
                       "it or choose another port")
    assert not tcp_left_open
    assert port == tcp_port  # and it could be taken again
