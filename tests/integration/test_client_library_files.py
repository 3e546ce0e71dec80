"""The client library's send_file() and download() (issue 14) against an in-process node on
loopback with a folder for files: a picture to a friend and a file to a group, streamed from
disk and back, checked by sha256; progress is reported; a non-member cannot download."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import pytest

import chatserver
from chatserver.entrypoints.client.library import (
    ChatError,
    DirectMessage,
    GroupMessage,
    connect,
)
from tests.unit.conftest import FAST_HASHER

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_send_file_and_download_to_a_friend_and_a_group(tmp_path: Path) -> None:
    config = chatserver.Config(database="memory://", port=0, ws_port=0,
                               files=str(tmp_path / "files"))
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300_000))
    big = tmp_path / "notes.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        listening = await node.start_serving()
        assert listening.web_port is not None
        ports = {"web_port": listening.web_port}
        async with connect("127.0.0.1", listening.port, **ports) as alice, connect(
            "127.0.0.1", listening.port, **ports
        ) as bob, connect("127.0.0.1", listening.port, **ports) as carol:
            ids = [await c.register(n, "pw") for c, n in
                   ((alice, "alice"), (bob, "bob"), (carol, "carol"))]
            for client, user_id in zip((alice, bob, carol), ids, strict=True):
                await client.login(user_id, "pw", receipts=False)
            group = await alice.create_group("hikers")
            await bob.join_group(group)
            seen: list[tuple[int, int]] = []
            await alice.send_file(picture, to_id=ids[1], text="look",
                                  progress=lambda done, total: seen.append((done, total)))
            assert seen[-1] == (picture.stat().st_size,) * 2
            await alice.send_file(big, group_id=group)
            received: list[DirectMessage | GroupMessage] = []
            with anyio.fail_after(5):
                while len(received) < 2:
                    event = await bob.next_event()
                    if isinstance(event, DirectMessage | GroupMessage) and event.file:
                        received.append(event)
            direct, in_group = received
            assert direct.text == "look" and direct.file is not None
            assert direct.file.mime == "image/png" and direct.file.name == "cat.png"
            for message, original in ((direct, picture), (in_group, big)):
                assert message.file is not None
                saved = await bob.download(message.file, tmp_path / "bob")
                assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(
                    original.read_bytes()).hexdigest()
            assert in_group.file is not None
            with pytest.raises(ChatError) as refused:
                await carol.download(in_group.file, tmp_path)
            assert refused.value.errno == 12


async def test_the_terminal_shows_a_file_downloads_it_and_sends_one_with_a_progress_bar(
    tmp_path: Path,
) -> None:
    from chatserver.entrypoints.client.terminal import Terminal
    from tests.unit.test_terminal_client import FakeConsole

    config = chatserver.Config(database="memory://", port=0, ws_port=0,
                               files=str(tmp_path / "files"))
    report = tmp_path / "report.pdf"
    report.write_bytes(os.urandom(700_000))
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        listening = await node.start_serving()
        async with connect("127.0.0.1", listening.port, web_port=listening.web_port) as alice:
            alice_id = await alice.register("alice", "pw")
            await alice.login(alice_id, "pw", receipts=False)
            console = FakeConsole()
            shell = Terminal("127.0.0.1", listening.port, console, web_port=listening.web_port)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(shell.run)
                console.type("2", "bob", "pw")  # register
                bob_id = int((await console.shows("your user id is")).split()[-1].strip("!.:"))
                console.type("1", str(bob_id), "pw")
                await console.shows("current login user")
                sent = await alice.send_file(report, to_id=bob_id, text="the report")
                line = await console.shows("download:")
                assert f"[file report.pdf, 700,000 bytes: download:{int(sent)}]" in line
                console.type(f"download:{int(sent)}:{tmp_path / 'inbox'}")
                assert "sha256 checked" in await console.shows("saved ")
                assert (tmp_path / "inbox" / "report.pdf").read_bytes() == report.read_bytes()
                console.type(f"sendfile:{alice_id}:{report}")
                with anyio.fail_after(5):
                    while True:
                        event = await alice.next_event()
                        if isinstance(event, DirectMessage) and event.file is not None:
                            break
                assert await console.shows("100%")
                print("\n".join(line for line in console.shown if "bytes" in line))
                console.type("quit")
                task_group.cancel_scope.cancel()


async def test_a_file_the_terminal_shows_in_history_can_be_downloaded(tmp_path: Path) -> None:
    from chatserver.entrypoints.client.terminal import Terminal
    from tests.unit.test_terminal_client import FakeConsole

    config = chatserver.Config(database="memory://", port=0, ws_port=0,
                               files=str(tmp_path / "files"))
    report = tmp_path / "report.pdf"
    report.write_bytes(os.urandom(50_000))
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        listening = await node.start_serving()
        async with connect("127.0.0.1", listening.port, web_port=listening.web_port) as alice:
            alice_id = await alice.register("alice", "pw")
            await alice.login(alice_id, "pw", receipts=False)
            async with connect("127.0.0.1", listening.port) as bob:
                bob_id = await bob.register("bob", "pw")
                await bob.login(bob_id, "pw", device="laptop")
                sent = await alice.send_file(report, to_id=bob_id, text="the report")
                with anyio.fail_after(5):
                    while not isinstance(event := await bob.next_event(), DirectMessage):
                        pass
                await bob.receipt([event.msg_id])  # had on this device: not pushed again
            console = FakeConsole()
            shell = Terminal("127.0.0.1", listening.port, console, device="laptop",
                             web_port=listening.web_port)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(shell.run)
                console.type("1", str(bob_id), "pw")
                await console.shows("current login user")
                console.type(f"history:{alice_id}")
                line = await console.shows("download:")
                assert f"[file report.pdf, 50,000 bytes: download:{int(sent)}]" in line
                console.type(f"download:{int(sent)}:{tmp_path / 'inbox'}")
                assert "sha256 checked" in await console.shows("saved ")
                assert (tmp_path / "inbox" / "report.pdf").read_bytes() == report.read_bytes()
                console.type("quit")
                task_group.cancel_scope.cancel()


async def test_send_file_to_nobody_is_refused_before_any_byte_is_uploaded(tmp_path: Path) -> None:
    """FILE_UPLOAD names no recipient, so send_file first asks HISTORY (limit 1) about the
    conversation, which is errno 4 for an unknown user, 5 for an unknown group, 6 for a group
    the user is not in: refused before a byte goes, not after the whole upload."""
    config = chatserver.Config(database="memory://", port=0, ws_port=0,
                               files=str(tmp_path / "files"))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    async with chatserver.open_node(config, hasher=FAST_HASHER) as node:
        listening = await node.start_serving()
        ports = {"web_port": listening.web_port}
        async with connect("127.0.0.1", listening.port, **ports) as alice, connect(
            "127.0.0.1", listening.port, **ports
        ) as bob:
            ids = [await c.register(n, "pw") for c, n in ((alice, "alice"), (bob, "bob"))]
            for client, user_id in zip((alice, bob), ids, strict=True):
                await client.login(user_id, "pw", receipts=False)
            theirs = await bob.create_group("not-alices")
            sent: list[int] = []
            for target, errno in (({"to_id": 999_999}, 4), ({"group_id": 999_999}, 5),
                                  ({"group_id": theirs}, 6)):
                with pytest.raises(ChatError) as refused:
                    await alice.send_file(big, progress=lambda done, _: sent.append(done),
                                          **target)
                assert refused.value.errno == errno
            assert sent == []  # not a byte went
            await alice.send_file(big, to_id=ids[1])  # a real recipient: it goes
