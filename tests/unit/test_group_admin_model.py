"""A hypothesis state machine for running groups and blocking (issue 13): the real use cases
on the memory adapters, a fake clock, and a plain model of each group's members and roles (in
joining order), who is muted until when, which names are taken, who blocks whom and which
friend requests wait.

Every user stays online on one client; after each step every client's pushes are drained and
checked against the model, so the checks are:
- every live group has exactly one creator, and the store's roles are the model's;
- a muted member cannot chat until the fake clock passes `until`;
- a member who was kicked (or left) receives nothing of the group afterwards: each group
  message reaches exactly the members at the time it was sent, and a GROUP_EVENT only those
  who were members just before or just after it;
- a dissolved group's name can be taken again (while it lives, it cannot);
- a blocked user's chats never arrive and their friend requests never show.
"""

from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from attrs import define
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatserver.application.commands import (
    AddFriend,
    BlockUser,
    CreateGroup,
    DissolveGroup,
    JoinGroup,
    KickMember,
    LeaveGroup,
    Login,
    MuteMember,
    Register,
    SendDirectMessage,
    SendGroupMessage,
    SetMemberRole,
    TransferGroup,
)
from chatserver.application.node import Limits
from chatserver.application.results import Done, GroupCreated, LoggedIn, MessageAccepted, Registered
from chatserver.domain.errors import Muted, NameTaken, NotAMember, NotPermitted
from chatserver.domain.groups import Action, Role, permitted
from chatserver.domain.messages import (
    DirectMessage,
    FriendRequestNotice,
    GroupEvent,
    GroupMessage,
    Kept,
)
from chatserver.domain.ports import Transaction
from chatserver.entrypoints.bootstrap import Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

USERS = 4
NAMES = ("alpha", "beta", "gamma")
user_index = st.integers(0, USERS - 1)
pick = st.integers(0, 100)
START_MS = 1_795_735_800_000


@define
class FakeClock:
    ms: int = START_MS

    def now_ms(self) -> int:
        return self.ms


class GroupAdminMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        # Only the rules under test refuse: the rate limits are out of the way.
        limits = Limits(
            groups_created_per_hour=100_000,
            group_changes_per_minute=100_000,
            block_changes_per_minute=100_000,
        )
        config = Config(database="memory://", node_id="model", limits=limits)
        self._app_cm = self.portal.wrap_async_context_manager(
            bootstrap(config, hasher=FAST_HASHER, clock=self.clock)
        )
        self.app = self._app_cm.__enter__()
        self.ids: list[int] = []
        self.clients: dict[int, EmbeddedClient] = {}
        for i in range(USERS):
            result = self.call(self.app.connect(), Register(f"user{i}", "pw"))
            assert isinstance(result, Registered)
            self.ids.append(result.user_id)
        for uid in self.ids:
            client = self.app.connect()
            assert isinstance(self.call(client, Login("pw", user_id=uid)), LoggedIn)
            self.clients[uid] = client
        # The model. A group's members in joining order, with their roles.
        self.groups: dict[int, dict[int, Role]] = {}
        self.names: dict[int, str] = {}
        self.ever: set[int] = set()  # every group created, dissolved or not
        self.muted: dict[tuple[int, int], int] = {}  # (group, member) -> until
        self.blocks: set[tuple[int, int]] = set()  # (blocker, blocked)
        self.requests: set[tuple[int, int]] = set()  # (from, to)
        self.friends: set[frozenset[int]] = set()
        self.expected: dict[int, set[int]] = {uid: set() for uid in self.ids}
        self.received: dict[int, set[int]] = {uid: set() for uid in self.ids}
        self.drain({})

    def teardown(self) -> None:
        self._app_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    def call(self, client: EmbeddedClient, command: Any) -> object:
        return self.portal.call(client.request, command)

    def act(self, who: int, command: object) -> object:
        """Send command as user index who; drain every client's pushes and check them against
        the model as it was before (the caller updates it after) and after this step."""
        before = {gid: set(members) for gid, members in self.groups.items()}
        try:
            return self.call(self.clients[self.ids[who]], command)
        finally:
            self._before = before

    def drain(self, before: dict[int, set[int]]) -> None:
        for uid, client in self.clients.items():
            events, client.outbox.events[:] = list(client.outbox.events), []
            for pushed in events:
                event: Any = pushed.delivery if isinstance(pushed, Kept) else pushed
                if isinstance(event, GroupMessage | DirectMessage):
                    assert event.msg_id in self.expected[uid], (
                        f"user {uid} got {event} they should not have"
                    )
                    assert event.msg_id not in self.received[uid], f"user {uid} got it twice"
                    self.received[uid].add(event.msg_id)
                elif isinstance(event, GroupEvent):
                    members = before.get(event.group_id, set()) | set(
                        self.groups.get(event.group_id, {})
                    )
                    assert uid in members, f"user {uid}, not in the group, got {event}"
                elif isinstance(event, FriendRequestNotice):
                    assert (uid, event.requester_id) not in self.blocks, (
                        f"user {uid} got a request from {event.requester_id}, whom they block"
                    )
        for uid in self.ids:
            assert self.received[uid] == self.expected[uid], f"user {uid} missed messages"

    def step_done(self) -> None:
        self.drain(self._before)

    def group_at(self, index: int) -> int:
        return sorted(self.groups)[index % len(self.groups)]

    def member_or_anyone(self, gid: int, index: int) -> int:
        """A user index: most often one of the group's members (so the rules act on them), else
        anyone."""
        members = list(self.groups[gid])
        if index < 75:
            return self.ids.index(members[index % len(members)])
        return index % USERS

    def role(self, gid: int, uid: int) -> Role | None:
        return self.groups.get(gid, {}).get(uid)

    def expect_refusal(
        self, gid: int, actor: int, target: int | None, action: Action
    ) -> type | None:
        """The error the use case must raise, None if it must do it."""
        actor_role = self.role(gid, actor)
        if actor_role is None:
            return NotAMember
        if target is None:
            return None if permitted(actor_role, action) else NotPermitted
        target_role = self.role(gid, target)
        if target_role is None:
            return NotAMember
        return None if permitted(actor_role, action, target_role) else NotPermitted

    def run_checked(self, who: int, command: object, refusal: type | None) -> bool:
        if refusal is not None:
            with pytest.raises(refusal):
                self.act(who, command)
            self.step_done()
            return False
        assert isinstance(self.act(who, command), Done)
        return True

    def drop_member(self, gid: int, uid: int) -> None:
        del self.groups[gid][uid]
        self.muted.pop((gid, uid), None)

    def drop_group(self, gid: int) -> None:
        for uid in list(self.groups[gid]):
            self.drop_member(gid, uid)
        del self.groups[gid]
        del self.names[gid]

    # Rules.

    @rule(who=user_index, name=st.sampled_from(NAMES))
    def create_group(self, who: int, name: str) -> None:
        if name in self.names.values():
            with pytest.raises(NameTaken):
                self.act(who, CreateGroup(name))
            self.step_done()
            return
        result = self.act(who, CreateGroup(name))  # a dissolved group's name is free again
        assert isinstance(result, GroupCreated)
        self.groups[result.group_id] = {self.ids[who]: Role.CREATOR}
        self.names[result.group_id] = name
        self.ever.add(result.group_id)
        self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=user_index, index=pick)
    def join(self, who: int, index: int) -> None:
        gid = self.group_at(index)
        self.act(who, JoinGroup(gid))
        self.groups[gid].setdefault(self.ids[who], Role.NORMAL)
        self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=pick, index=pick)
    def leave(self, who: int, index: int) -> None:
        gid = self.group_at(index)
        who = self.member_or_anyone(gid, who)
        uid = self.ids[who]
        if not self.run_checked(who, LeaveGroup(gid), None if self.role(gid, uid) else NotAMember):
            return
        if self.groups[gid][uid] is Role.CREATOR:
            # The creator leaving passes the role on (the earliest admin, else the earliest).
            heir = next(
                (m for m in self.groups[gid] if m != uid and self.groups[gid][m] is Role.ADMIN),
                None,
            )
            heir = heir or next((m for m in self.groups[gid] if m != uid), None)
            if heir is None:
                self.drop_group(gid)  # alone: the group goes
                self.step_done()
                return
            self.groups[gid][heir] = Role.CREATOR
        self.drop_member(gid, uid)
        self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=pick, whom=pick, index=pick)
    def kick(self, who: int, whom: int, index: int) -> None:
        gid = self.group_at(index)
        who, whom = self.member_or_anyone(gid, who), self.member_or_anyone(gid, whom)
        uid, tid = self.ids[who], self.ids[whom]
        refusal = self.expect_refusal(gid, uid, tid, Action.KICK)
        if self.run_checked(who, KickMember(gid, tid), refusal):
            self.drop_member(gid, tid)
            self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=pick, whom=pick, index=pick, role=st.sampled_from(["admin", "normal"]))
    def set_role(self, who: int, whom: int, index: int, role: str) -> None:
        gid = self.group_at(index)
        who, whom = self.member_or_anyone(gid, who), self.member_or_anyone(gid, whom)
        uid, tid = self.ids[who], self.ids[whom]
        refusal = self.expect_refusal(gid, uid, tid, Action.SET_ROLE)
        if self.run_checked(who, SetMemberRole(gid, tid, role), refusal):
            self.groups[gid][tid] = Role(role)
            self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=pick, whom=pick, index=pick)
    def transfer(self, who: int, whom: int, index: int) -> None:
        gid = self.group_at(index)
        who, whom = self.member_or_anyone(gid, who), self.member_or_anyone(gid, whom)
        uid, tid = self.ids[who], self.ids[whom]
        refusal = self.expect_refusal(gid, uid, tid, Action.TRANSFER)
        if self.run_checked(who, TransferGroup(gid, tid), refusal):
            self.groups[gid][tid] = Role.CREATOR
            self.groups[gid][uid] = Role.ADMIN
            self.step_done()

    @precondition(lambda self: self.groups)
    @rule(who=pick, index=pick)
    def dissolve(self, who: int, index: int) -> None:
        gid = self.group_at(index)
        who = self.member_or_anyone(gid, who)
        uid = self.ids[who]
        refusal = self.expect_refusal(gid, uid, None, Action.DISSOLVE)
        if self.run_checked(who, DissolveGroup(gid), refusal):
            self.drop_group(gid)
            self.step_done()

    @precondition(lambda self: self.groups)
    @rule(
        who=pick,
        whom=pick,
        index=pick,
        for_ms=st.sampled_from([0, 1_000, 60_000, 3_600_000]),
    )
    def mute(self, who: int, whom: int, index: int, for_ms: int) -> None:
        gid = self.group_at(index)
        who, whom = self.member_or_anyone(gid, who), self.member_or_anyone(gid, whom)
        uid, tid = self.ids[who], self.ids[whom]
        until = self.clock.ms + for_ms if for_ms else 0  # 0 unmutes
        refusal = self.expect_refusal(gid, uid, tid, Action.MUTE)
        if self.run_checked(who, MuteMember(gid, tid, until), refusal):
            self.muted[(gid, tid)] = until
            self.step_done()

    @rule(ms=st.sampled_from([1, 999, 1_000, 30_000, 3_600_000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.ms += ms

    @precondition(lambda self: self.groups)
    @rule(who=pick, index=pick, text=st.text(min_size=1, max_size=5))
    def send_group(self, who: int, index: int, text: str) -> None:
        gid = self.group_at(index)
        who = self.member_or_anyone(gid, who)
        uid = self.ids[who]
        if self.role(gid, uid) is None:
            refusal: type | None = NotAMember
        elif self.muted.get((gid, uid), 0) > self.clock.ms:
            refusal = Muted  # until the clock passes `until`
        else:
            refusal = None
        if refusal is not None:
            with pytest.raises(refusal):
                self.act(who, SendGroupMessage(gid, text))
            self.step_done()
            return
        result = self.act(who, SendGroupMessage(gid, text))
        assert isinstance(result, MessageAccepted)
        for member in set(self.groups[gid]) - {uid}:
            self.expected[member].add(result.msg_id)
        self.step_done()

    @rule(who=user_index, to=user_index, text=st.text(min_size=1, max_size=5))
    def send_direct(self, who: int, to: int, text: str) -> None:
        uid, tid = self.ids[who], self.ids[to]
        if (tid, uid) in self.blocks:  # their chats never arrive
            with pytest.raises(NotPermitted):
                self.act(who, SendDirectMessage(tid, text))
            self.step_done()
            return
        result = self.act(who, SendDirectMessage(tid, text))
        assert isinstance(result, MessageAccepted)
        if tid != uid:
            self.expected[tid].add(result.msg_id)
        self.step_done()

    @rule(who=user_index, other=user_index, block=st.booleans())
    def block(self, who: int, other: int, block: bool) -> None:
        if who == other:
            return
        uid, oid = self.ids[who], self.ids[other]
        assert isinstance(self.act(who, BlockUser(oid, block)), Done)
        if block:
            self.blocks.add((uid, oid))
            self.friends.discard(frozenset((uid, oid)))
            self.requests -= {(uid, oid), (oid, uid)}
        else:
            self.blocks.discard((uid, oid))
        self.step_done()

    @rule(who=user_index, other=user_index)
    def add_friend(self, who: int, other: int) -> None:
        if who == other:
            return
        uid, oid = self.ids[who], self.ids[other]
        # Blocked by them: errno 0 and it reaches nobody, even when blocking them too (the
        # refusal would not tell them more than they know, but the silence comes first).
        if (uid, oid) in self.blocks and (oid, uid) not in self.blocks:
            with pytest.raises(NotPermitted):
                self.act(who, AddFriend(oid))
            self.step_done()
            return
        assert isinstance(self.act(who, AddFriend(oid)), Done)
        if (oid, uid) in self.blocks or frozenset((uid, oid)) in self.friends:
            pass  # reaches nobody
        elif (oid, uid) in self.requests:
            self.requests.discard((oid, uid))
            self.friends.add(frozenset((uid, oid)))
        else:
            self.requests.add((uid, oid))
        self.step_done()

    @rule(who=user_index)
    def log_in_again(self, who: int) -> None:
        uid = self.ids[who]
        client = self.app.connect()
        result = self.call(client, Login("pw", user_id=uid))
        assert isinstance(result, LoggedIn)
        assert {u.id for u in result.friend_requests} == {a for a, b in self.requests if b == uid}
        assert set(result.blocked) == {b for a, b in self.blocks if a == uid}
        assert {g.group.id for g in result.groups} == {
            gid for gid, members in self.groups.items() if uid in members
        }
        self.clients[uid] = client  # the old session is taken over; what waited, it had
        self.drain({})

    # Invariants, read from the store itself.

    def stored(self) -> dict[int, dict[int, tuple[Role, int]] | None]:
        gids = sorted(self.ever)

        def read(tx: Transaction) -> dict[int, dict[int, tuple[Role, int]] | None]:
            out: dict[int, dict[int, tuple[Role, int]] | None] = {}
            for gid in gids:
                if tx.groups.get(gid) is None:
                    out[gid] = None
                else:
                    out[gid] = {m.user.id: (m.role, m.muted_until) for m in tx.groups.members(gid)}
            return out

        return self.portal.call(self.app.node.uow.run, read)

    @invariant()
    def every_live_group_has_exactly_one_creator(self) -> None:
        for gid, members in self.stored().items():
            if gid not in self.groups:
                assert members is None, f"group {gid} should be gone"
                continue
            assert members is not None, f"group {gid} is gone"
            creators = [uid for uid, (role, _) in members.items() if role is Role.CREATOR]
            assert len(creators) == 1, f"group {gid} has creators {creators}"
            assert {uid: role for uid, (role, _) in members.items()} == self.groups[gid]
            assert list(members) == list(self.groups[gid]), "members not in joining order"
            for uid, (_, until) in members.items():
                assert until == self.muted.get((gid, uid), 0)


# Modest, for CI: about 5-10 s on this 2-core machine.
TestGroupAdminOnMemory = GroupAdminMachine.TestCase
TestGroupAdminOnMemory.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
