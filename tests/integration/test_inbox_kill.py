"""No gap, ever, when a node is SIGKILLed halfway through the traffic (issue 12): two nodes
behind one Redis and one database, 50 senders to one user, one node killed mid-traffic. The
user's device on the surviving node is pushed positions with no hole; its inbox holds every
acknowledged message exactly once, at positions 1, 2, 3, ... without a gap."""

import secrets
from pathlib import Path

import anyio
import pytest

from chatserver.entrypoints.client.library import (
    ChatClient,
    ChatError,
    ConnectionLost,
    DirectMessage,
    connect,
)
from tests.integration.conftest import HOST, ServerProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS = "redis://127.0.0.1:6379/0"
SENDERS = 50


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start_node(tmp_path: Path, name: str, bus: str) -> ServerProcess:
    args = ["--bus", bus, "--node-id", name, "--node-lease", "3", "--hash-cost", "1024"]
    return ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / f"{name}.log",
                         args).start()


async def test_a_node_killed_mid_traffic_leaves_no_gap_and_loses_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    bus = f"{REDIS}?namespace=kill-{secrets.token_hex(4)}"
    doomed, survivor = start_node(tmp_path, "doomed", bus), start_node(tmp_path, "survivor", bus)
    assert doomed.port is not None and survivor.port is not None
    acked: set[int] = set()
    pushed: list[DirectMessage] = []
    pushed_to_phone: list[DirectMessage] = []
    try:
        async with connect(HOST, survivor.port) as bob, connect(HOST, doomed.port) as phone:
            bob_id = await bob.register(f"bob-{secrets.token_hex(3)}", "pw")
            start = (await bob.login(bob_id, "pw", receipts=False, device="pc")).last_pos
            phone_start = (await phone.login(bob_id, "pw", receipts=False, device="phone")).last_pos

            async def sender(index: int, stop: anyio.Event) -> None:
                port = doomed.port if index % 2 else survivor.port
                assert port is not None
                try:
                    async with connect(HOST, port) as client:
                        me = await client.register(f"s{index}-{secrets.token_hex(3)}", "pw")
                        await client.login(me, "pw", receipts=False)
                        await send_until(client, bob_id, stop, acked)
                except (ConnectionLost, OSError, TimeoutError):
                    pass  # its node was killed: what it had acknowledged is counted

            async def read_bob() -> None:
                async for event in bob.events():
                    if isinstance(event, DirectMessage):
                        pushed.append(event)

            async def read_phone() -> None:  # until its node dies
                async for event in phone.events():
                    if isinstance(event, DirectMessage):
                        pushed_to_phone.append(event)

            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_bob)
                tg.start_soon(read_phone)
                for index in range(SENDERS):
                    tg.start_soon(sender, index, stop)
                await anyio.sleep(2.0)
                before_kill = len(acked)
                doomed.kill()
                await anyio.sleep(1.5)  # the survivor's senders go on meanwhile
                stop.set()
                await anyio.sleep(1.0)  # the last pushes arrive, holes are filled
                tg.cancel_scope.cancel()

            # Each device's live sequence has no hole and no repeat (the phone's until its node
            # died), and the phone, back on the surviving node, goes on from its mark.
            live = [m.pos for m in pushed]
            assert live == list(range(start + 1, start + 1 + len(live))), live[:50]
            on_phone = [m.pos for m in pushed_to_phone]
            assert on_phone == list(range(phone_start + 1, phone_start + 1 + len(on_phone)))
            async with connect(HOST, survivor.port) as phone_again:
                back = await phone_again.login(bob_id, "pw", receipts=False, device="phone")
                shown = [m.pos for m in back.offline_messages]  # type: ignore[union-attr]
                assert shown == list(range(shown[0], shown[0] + len(shown))) if shown else True
            # The inbox: every acknowledged message once, at 1, 2, 3, ... (SYNC pages of 500).
            kept: list[tuple[int, int]] = []
            last = None
            while last is None or (kept and kept[-1][0] < last):
                synced = await bob.sync(kept[-1][0] if kept else 0, 500)
                last = synced.last_pos
                kept += [(m.pos, m.msg_id) for m in synced.messages]  # type: ignore[union-attr]
                if not synced.messages:
                    break
            assert [pos for pos, _ in kept] == list(range(1, len(kept) + 1))
            msg_ids = [msg_id for _, msg_id in kept]
            assert len(msg_ids) == len(set(msg_ids))
            assert acked <= set(msg_ids), f"{len(acked - set(msg_ids))} acknowledged lost"
            assert before_kill > 100 and len(acked) > before_kill, (before_kill, len(acked))
            print(f"\n{len(acked)} acknowledged ({before_kill} before the kill), "
                  f"{len(kept)} kept, {len(live)} pushed live to the surviving device")
    finally:
        doomed.kill()
        survivor.stop()
        survivor.assert_no_traceback()


async def send_until(client: ChatClient, to: int, stop: anyio.Event, acked: set[int]) -> None:
    while not stop.is_set():
        try:
            acked.add(await client.send_chat(to, "load"))
        except ChatError as error:
            assert error.errno == 11  # the node's Redis peer gone a moment: not acknowledged
            await anyio.sleep(0.05)
        await anyio.sleep(0.01)
