"""A hypothesis state machine for the inbox (PROTOCOL.md Version 2): users on several devices,
on two nodes of an in-process cluster sharing one SQLite database, sending to each other and
to a group, while pushes between nodes are lost at random (as when a node dies between keeping
a message and pushing it), sessions come and go, and the second node may vanish (SIGKILL).

What must hold: every session is pushed positions in increasing order with no hole (what it
sent itself counts: its ACK carries the pos); a session that is behind at the end catches up
with SYNC; every acknowledged message is in the inbox of each recipient, and of its sender,
exactly once.
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatserver.adapters.memory.cluster import InProcessHub
from chatserver.application.commands import (
    CreateGroup,
    JoinGroup,
    Login,
    Logout,
    Register,
    SendDirectMessage,
    SendGroupMessage,
    Sync,
)
from chatserver.application.results import (
    GroupCreated,
    LoggedIn,
    MessageAccepted,
    Registered,
    Synced,
)
from chatserver.domain.messages import Event, Kept
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

USERS = 3
DEVICES = ("pc", "phone", "tablet")
NODES = 2


class LosingBus:
    """A node's bus that loses the pushes it is told to (they are in the inbox already)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lose = 0
        self.lost = 0

    async def deliver(
        self,
        node_id: str,
        user_ids: Sequence[int],
        event: Event,
        positions: Sequence[int] | None = None,
    ) -> bool:
        if positions is not None and self.lose:
            self.lose -= 1
            self.lost += 1
            return True  # as if sent, and gone with the node that was to push it
        return bool(await self.inner.deliver(node_id, user_ids, event, positions))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Seen:
    """What one session has: the positions it was pushed (or sent itself), in order."""

    def __init__(self, client: EmbeddedClient, user: int, node: int, last_pos: int) -> None:
        self.client = client
        self.user = user
        self.node = node
        self.start = last_pos
        self.positions: list[int] = []

    def take(self) -> None:
        events, self.client.outbox.events[:] = list(self.client.outbox.events), []
        self.positions.extend(e.pos for e in events if isinstance(e, Kept))

    def sent(self, pos: int) -> None:
        # What was pushed while the request waited (the ACK follows every push before its pos)
        # comes before the ACK's own pos.
        self.take()
        self.positions.append(pos)


class InboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(self._tmp.name) / 'chat.db'}"
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        hub = self.hub = InProcessHub()
        self.killed = False
        self._apps = [
            self.portal.wrap_async_context_manager(
                bootstrap(Config(database=url, node_id=f"n{i}"), hub=hub, hasher=FAST_HASHER)
            )
            for i in range(NODES)
        ]
        self.nodes: list[ChatApp] = [cm.__enter__() for cm in self._apps]
        self.buses = []
        for app in self.nodes:
            bus = LosingBus(app.node.router.bus)
            app.node.router.bus = bus
            self.buses.append(bus)
        self.ids = []
        for i in range(USERS):
            result = self.call(self.nodes[0].connect(), Register(f"user{i}", "pw"))
            assert isinstance(result, Registered)
            self.ids.append(result.user_id)
        owner = self.nodes[0].connect()
        self.call(owner, Login("pw", user_id=self.ids[0], device="setup"))
        created = self.call(owner, CreateGroup("all"))
        assert isinstance(created, GroupCreated)
        self.group = created.group_id
        for uid in self.ids[1:]:
            member = self.nodes[0].connect()
            self.call(member, Login("pw", user_id=uid, device="setup"))
            self.call(member, JoinGroup(self.group))
            self.call(member, Logout())
        self.call(owner, Logout())
        self.sessions: dict[tuple[int, str], Seen] = {}
        # msg_id -> the users in whose inbox it must be, once each
        self.acked: dict[int, set[int]] = {}

    def call(self, client: EmbeddedClient, command: object) -> Any:
        return self.portal.call(client.request, command)

    def settle(self) -> None:
        """Let pushes in flight and the gap filler (50 ms) do their work."""
        self.portal.call(anyio.sleep, 0.08)
        for seen in self.sessions.values():
            seen.take()

    def teardown(self) -> None:
        try:
            self.settle()
            self.settle()
            for seen in self.sessions.values():
                self.check_contiguous(seen)
                session = seen.client.connection.session
                # A hole with something after it was filled from the inbox (gap filler).
                assert session is not None and not session.early, sorted(session.early)
                self.catch_up(seen)
            self.check_inboxes()
        finally:
            for cm in reversed(self._apps):
                cm.__exit__(None, None, None)
            self._portal_cm.__exit__(None, None, None)
            self._tmp.cleanup()

    def check_contiguous(self, seen: Seen) -> None:
        expected = list(range(seen.start + 1, seen.start + 1 + len(seen.positions)))
        assert seen.positions == expected, (
            f"user {seen.user} on node {seen.node} saw {seen.positions}, after {seen.start}"
        )

    def catch_up(self, seen: Seen) -> None:
        """A push lost at the tail (nothing came after it) is read with SYNC, as a client
        does after a reconnect: then the session has everything."""
        have = seen.start + len(seen.positions)
        synced = self.call(seen.client, Sync(have, 500))
        assert isinstance(synced, Synced)
        assert [k.pos for k in synced.msgs] == list(range(have + 1, synced.last_pos + 1))

    def check_inboxes(self) -> None:
        def read(tx: Any) -> dict[int, list[int]]:
            return {uid: [k.delivery.msg_id for k in tx.inbox.after(uid, 0, 10_000)]
                    for uid in self.ids}

        inboxes = self.portal.call(self.nodes[0].node.uow.run, read)
        for msg_id, users in self.acked.items():
            for uid in self.ids:
                count = inboxes[uid].count(msg_id)
                assert count == (1 if uid in users else 0), (msg_id, uid, count)

    # Rules.

    @rule(user=st.integers(0, USERS - 1), device=st.sampled_from(DEVICES),
          node=st.integers(0, NODES - 1))
    def login(self, user: int, device: str, node: int) -> None:
        if self.killed:
            node = 0
        uid = self.ids[user]
        old = self.sessions.pop((uid, device), None)
        if old is not None:
            old.take()
            self.check_contiguous(old)
        client = self.nodes[node].connect()
        result = self.call(client, Login("pw", user_id=uid, device=device, receipts=False))
        assert isinstance(result, LoggedIn)
        offline = [k.pos for k in result.waiting]
        assert offline == sorted(offline) and all(p <= result.last_pos for p in offline)
        self.sessions[(uid, device)] = Seen(client, uid, node, result.last_pos)

    @rule(pick=st.integers(0, 100), clean=st.booleans())
    def leave(self, pick: int, clean: bool) -> None:
        if not self.sessions:
            return
        key = sorted(self.sessions)[pick % len(self.sessions)]
        seen = self.sessions.pop(key)
        seen.take()
        self.check_contiguous(seen)
        if clean:
            self.call(seen.client, Logout())
        else:
            self.portal.call(seen.client.close)

    @rule(pick=st.integers(0, 100), to=st.integers(0, USERS - 1))
    def send_direct(self, pick: int, to: int) -> None:
        if not self.sessions:
            return
        seen = self.sessions[sorted(self.sessions)[pick % len(self.sessions)]]
        seen.take()
        recipient = self.ids[to]
        result = self.call(seen.client, SendDirectMessage(recipient, "hi"))
        assert isinstance(result, MessageAccepted)
        seen.sent(result.pos)
        self.acked[result.msg_id] = {recipient, seen.user}

    @rule(pick=st.integers(0, 100))
    def send_group(self, pick: int) -> None:
        if not self.sessions:
            return
        seen = self.sessions[sorted(self.sessions)[pick % len(self.sessions)]]
        seen.take()
        result = self.call(seen.client, SendGroupMessage(self.group, "to all"))
        assert isinstance(result, MessageAccepted)
        seen.sent(result.pos)
        self.acked[result.msg_id] = set(self.ids)

    @rule(node=st.integers(0, NODES - 1), count=st.integers(1, 3))
    def lose_pushes(self, node: int, count: int) -> None:
        self.buses[node].lose += count

    @rule()
    def wait(self) -> None:
        self.settle()

    @precondition(lambda self: not self.killed)
    @rule()
    def kill_the_second_node(self) -> None:
        """Node 1 vanishes from the cluster, as if SIGKILLed: its sessions are gone (what they
        were pushed so far had no hole), and nobody pushes to it any more."""
        self.killed = True
        self.hub.detach(self.nodes[1].node.node_id)
        for key in [k for k, seen in self.sessions.items() if seen.node == 1]:
            seen = self.sessions.pop(key)
            seen.take()
            self.check_contiguous(seen)

    @invariant()
    def every_session_sees_positions_in_order_without_a_hole(self) -> None:
        for seen in self.sessions.values():
            seen.take()
            self.check_contiguous(seen)


class TestInboxOnTwoNodes(InboxMachine.TestCase):  # type: ignore[name-defined]
    settings = settings(
        max_examples=15, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
