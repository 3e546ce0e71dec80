"""The client library's version 2 calls (device=, sync(), history(), read()) against a real
server process."""

from pathlib import Path

import anyio
import pytest

from chatserver.entrypoints.client.library import DirectMessage, Read, connect
from tests.integration.conftest import HOST, ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_two_devices_sync_history_and_read_through_the_library(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log").start()
    try:
        assert server.port is not None
        async with (
            connect(HOST, server.port) as pc,
            connect(HOST, server.port) as phone,
            connect(HOST, server.port) as bob,
        ):
            alice_id = await pc.register("alice-lib", "pw")
            bob_id = await bob.register("bob-lib", "pw")
            await pc.login(alice_id, "pw", receipts=False, device="pc")
            await phone.login(alice_id, "pw", receipts=False, device="phone")
            await bob.login(bob_id, "pw", receipts=False)
            for text in ("one", "two", "three"):
                await bob.send_chat(alice_id, text)
            with anyio.fail_after(5):
                on_pc = [await pc.next_event() for _ in range(3)]
                on_phone = [await phone.next_event() for _ in range(3)]
            for got in (on_pc, on_phone):
                assert [(e.text, e.pos) for e in got if isinstance(e, DirectMessage)] == [
                    ("one", 1), ("two", 2), ("three", 3)
                ]
            synced = await phone.sync(1, limit=1)
            assert [m.pos for m in synced.messages] == [2] and synced.last_pos == 3
            page = await pc.history(with_user=bob_id, limit=2)
            assert [m.text for m in page.messages] == ["two", "three"]  # type: ignore[union-attr]
            assert page.more
            await pc.read(3)
            with anyio.fail_after(5):
                assert await phone.next_event() == Read(3)
            again = await pc.login(alice_id, "pw", device="pc", since=2)
            assert [m.pos for m in again.offline_messages] == [3]  # type: ignore[union-attr]
            assert (again.last_pos, again.read_pos) == (3, 3)
    finally:
        server.stop()
        server.assert_no_traceback()
