"""The soak run: hundreds of receipting clients doing random things to one server for minutes.

    python -m tests.soak [--clients 200] [--seconds 120] [--database URL | --port P]

Without --port it starts its own `chatserver serve` on 127.0.0.1 (memory:// unless --database
says otherwise, `--connections-per-address 0`), samples its RSS from /proc and reads its log.
With --port it uses a server already listening on 127.0.0.1:P (--server-pid and --server-log
then give what it cannot otherwise see).

Every client (chatserver.entrypoints.client.library) registers, logs in with receipts, and then,
until the time is up, does random operations: one-to-one chat, group chat in a few shared groups
(membership is fixed after setup), friend requests and answers, friends removed, logout and login
again, ping; everything delivered to it is receipted. At the end every client closes, then logs
in once more to collect what was stored for it. The checks:

- every message acknowledged (a msg_id returned by send_chat or send_group_chat) reached each of
  its recipients, with its text unchanged;
- no message came again to a user after that user's receipt for it was acknowledged
  (PROTOCOL.md: a receipted message is deleted), and none came twice within one session;
- no request failed in a way a well-behaved client should never see (timeouts, lost
  connections, errno 9 or 11, ...);
- the server's RSS during the operations is flat;
- the server log holds no Traceback and no ERROR line, and the server exits 0 on SIGTERM.

It prints its figures and returns non-zero on any failure. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import TypeVar

import anyio
from anyio.abc import ObjectReceiveStream

from chatserver.entrypoints.client.library import (
    ChatClient,
    ChatError,
    ConnectionLost,
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRemoved,
    FriendRequest,
    GroupEvent,
    GroupMessage,
    Kicked,
    LoginResult,
    Presence,
    UnknownFrame,
    connect,
)

T = TypeVar("T")

HOST = "127.0.0.1"  # loopback only
REQUEST_TIMEOUT = 30.0  # a login may queue behind many password hashes
BARRIER_TIMEOUT = 120.0
QUIET_SECONDS = 1.0  # "nothing more is coming" when a connection is silent this long
COLLECT_SECONDS = 15.0  # at most this long collecting what is stored, per client
RSS_SLACK_MIB = 1.5  # growth always allowed (samples are noisy; a hash takes 16 MiB for a moment)
SETUP_CONCURRENCY = 12  # registrations and logins at once (each costs a slow password hash)
TEXT_PIECES = ["hi", "hello", " ", "'", '"', "\\", "中文", "😀", "é", "\t", "%s", "{}", "<b>"]

# Errors a well-behaved client may get, by operation: anything else is a failure.
EXPECTED_ERRNOS = {
    "answer_friend": {4},  # the request was already answered (e.g. both asked each other)
}


@dataclass
class Options:
    clients: int = 200
    seconds: float = 120.0
    port: int | None = None
    database: str = "memory://"
    server_pid: int | None = None
    server_log: Path | None = None
    seed: int = 1
    groups: int = 4
    interval: float = 1.0  # mean seconds between one client's operations
    rss_every: float = 3.0
    rss_tolerance: float = 0.5  # MiB per minute of growth still called flat
    log_dir: Path | None = None  # where the server started here logs (default: a new temp dir)


@dataclass
class Sent:
    kind: str
    sender: int
    recipients: tuple[int, ...]
    text: str


@dataclass
class Ledger:
    """Everything the clients did and saw, checked at the end."""

    sent: dict[int, Sent] = field(default_factory=dict)  # msg_id -> what was acknowledged
    # uid -> msg_id -> the sessions (numbered per user) in which it came
    delivered: dict[int, dict[int, list[int]]] = field(default_factory=dict)
    texts: dict[tuple[int, int], str] = field(default_factory=dict)  # (uid, msg_id) -> text
    receipted: dict[int, set[int]] = field(default_factory=dict)  # uid -> msg_ids acknowledged
    after_receipt: list[str] = field(default_factory=list)
    same_session: list[str] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    expected_errors: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    notices: set[int] = field(default_factory=set)  # msg_ids of FRIEND_RESPONSE notices
    receipts_sent: int = 0
    barrier_timeouts: int = 0

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{what}: {detail}")

    def deliver(self, uid: int, msg_id: int, session: int, text: str | None) -> None:
        sessions = self.delivered.setdefault(uid, {}).setdefault(msg_id, [])
        if msg_id in self.receipted.get(uid, ()):
            where = "the same session" if session in sessions else f"session {session}"
            self.after_receipt.append(
                f"user {uid} got msg_id {msg_id} again in {where} after its receipt was "
                f"acknowledged (earlier sessions: {sessions})")
        elif session in sessions:
            self.same_session.append(f"user {uid} got msg_id {msg_id} twice in session {session}")
        sessions.append(session)
        if text is not None:
            self.texts.setdefault((uid, msg_id), text)


class Barrier:
    """All clients meet here (bounded: a client that never comes cannot hang the rest)."""

    def __init__(self, parties: int) -> None:
        self.left = parties
        self.event = anyio.Event()
        self.passed: set[int] = set()

    async def wait(self, ledger: Ledger, index: int) -> None:
        if index in self.passed:
            return
        self.passed.add(index)
        self.left -= 1
        if self.left <= 0:
            self.event.set()
        with anyio.move_on_after(BARRIER_TIMEOUT) as scope:
            await self.event.wait()
        if scope.cancelled_caught:
            ledger.barrier_timeouts += 1


@dataclass
class Plan:
    """Who is in which group, fixed before the run."""

    members: list[list[int]]  # group -> client indices (the first one creates it)
    group_ids: list[int]
    member_ids: list[list[int]] = field(default_factory=list)  # group -> user ids
    ready: anyio.Event = field(default_factory=anyio.Event)
    done: set[int] = field(default_factory=set)  # groups created (or given up on)

    def settle(self, group: int, group_id: int) -> None:
        if group not in self.done:
            self.done.add(group)
            self.group_ids[group] = group_id
            if len(self.done) == len(self.members):
                self.ready.set()


# --------------------------------------------------------------------------- one client


class SoakClient:
    def __init__(self, index: int, run_id: str, options: Options, ledger: Ledger, plan: Plan,
                 port: int, rng: random.Random) -> None:
        self.index = index
        self.name = f"soak{run_id}_{index}"
        self.password = f"pw-{run_id}-{index}"
        self.options = options
        self.ledger = ledger
        self.plan = plan
        self.port = port
        self.rng = rng
        self.uid = 0
        self.session = 0
        self.logged_in = False
        self.others: list[int] = []  # every other client's user id
        self.groups = [g for g, members in enumerate(plan.members) if index in members]
        self.pending_requests: set[int] = set()
        self.friends: set[int] = set()
        self.sent_count = 0
        self.last_ok = False  # whether the last call() succeeded

    # ---- helpers
    def record(self, event: Event) -> int | None:
        """Book one push; returns the msg_id to receipt, if any."""
        ledger = self.ledger
        ledger.events[type(event).__name__] += 1
        if isinstance(event, DirectMessage | GroupMessage):
            ledger.deliver(self.uid, event.msg_id, self.session, event.text)
            return event.msg_id
        if isinstance(event, FriendAnswer):
            ledger.deliver(self.uid, event.msg_id, self.session, None)
            ledger.notices.add(event.msg_id)
            if event.accepted:
                self.friends.add(event.responder_id)
            return event.msg_id
        if isinstance(event, GroupEvent):  # Version 2: kept and receipted like a message
            ledger.deliver(self.uid, event.msg_id, self.session, None)
            ledger.notices.add(event.msg_id)
            return event.msg_id
        if isinstance(event, FriendRequest):
            self.pending_requests.add(event.requester_id)
        elif isinstance(event, Kicked):
            ledger.error("kicked", f"user {self.uid}: {event.reason}")
        elif isinstance(event, FriendRemoved):  # Version 2: a friend removed this user
            self.friends.discard(event.user_id)
        elif isinstance(event, UnknownFrame):
            ledger.error("unknown frame", repr(event.frame)[:300])
        elif not isinstance(event, Presence):
            ledger.error("unexpected event", repr(event)[:300])
        return None

    async def receipt(self, client: ChatClient, msg_ids: list[int]) -> None:
        if not msg_ids or not self.logged_in:
            return
        self.ledger.receipts_sent += 1
        await self.call("receipt", client.receipt(msg_ids))
        # Only after the server acknowledged it: from now on these must never come again.
        if self.last_ok:
            self.ledger.receipted.setdefault(self.uid, set()).update(msg_ids)

    async def handle(self, client: ChatClient, events: ObjectReceiveStream[Event],
                     first: Event | None) -> None:
        """Book `first` and everything already waiting, then receipt them in one request."""
        batch = [] if first is None else [first]
        while True:
            try:
                batch.append(events.receive_nowait())
            except anyio.WouldBlock:
                break
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                break
        ids = [i for i in map(self.record, batch) if i is not None]
        await self.receipt(client, ids)

    async def call(self, op: str, request: Awaitable[T]) -> T | None:
        """Run one request; book errors; returns its result or None."""
        self.last_ok = False
        try:
            result = await request
        except ChatError as exc:
            if exc.errno in EXPECTED_ERRNOS.get(op, ()):
                self.ledger.expected_errors[f"{op} errno {exc.errno}"] += 1
            else:
                self.ledger.error(f"{op} errno {exc.errno}", f"user {self.uid}: {exc.errmsg}")
            return None
        except TimeoutError:
            self.ledger.error(f"{op} timeout", f"user {self.uid}")
            return None
        self.last_ok = True
        return result

    async def login(self, client: ChatClient, ledger_op: str) -> LoginResult | None:
        self.session += 1
        result: LoginResult | None = await self.call(
            ledger_op, client.login(self.uid, self.password, receipts=True))
        if result is None:
            return None
        self.logged_in = True
        ids = []
        for stored in result.offline_messages:
            msg_id = self.record(stored) if not isinstance(stored, UnknownFrame) else None
            if isinstance(stored, UnknownFrame):
                self.ledger.error("unknown stored message", repr(stored.frame)[:300])
            if msg_id is not None:
                ids.append(msg_id)
        self.pending_requests.update(r.requester_id for r in result.friend_requests)
        self.friends = {f.id for f in result.friends}
        await self.receipt(client, ids)
        return result

    # ---- the phases
    async def set_up(self, client: ChatClient) -> None:
        uid = await self.call("register", client.register(self.name, self.password))
        if uid is None:
            raise ConnectionLost("registration failed")
        self.uid = uid
        if await self.login(client, "login") is None:
            raise ConnectionLost("login failed")

    async def create_group(self, client: ChatClient, run_id: str) -> None:
        for g, members in enumerate(self.plan.members):
            if members[0] == self.index:
                gid = await self.call("create_group",
                                      client.create_group(f"soak{run_id}_g{g}", "soak group"))
                self.plan.settle(g, gid or 0)

    async def join_groups(self, client: ChatClient) -> None:
        with anyio.move_on_after(BARRIER_TIMEOUT):
            await self.plan.ready.wait()
        for g in self.groups:
            if self.plan.members[g][0] != self.index and self.plan.group_ids[g]:
                await self.call("join_group", client.join_group(self.plan.group_ids[g]))

    async def operate(self, client: ChatClient, deadline: float) -> None:
        events = client.events()
        rng = self.rng
        next_op = time.monotonic() + rng.uniform(0, self.options.interval)
        while time.monotonic() < deadline:
            first: Event | None = None
            with anyio.move_on_after(max(0.0, min(next_op, deadline) - time.monotonic())):
                try:
                    first = await events.receive()
                except anyio.EndOfStream:
                    raise ConnectionLost("events ended") from None
            if first is not None:
                await self.handle(client, events, first)
                continue
            if time.monotonic() >= deadline:
                break
            await self.operation(client, events)
            next_op = time.monotonic() + rng.expovariate(1 / self.options.interval)

    def text(self) -> str:
        self.sent_count += 1
        pieces = "".join(self.rng.choice(TEXT_PIECES) for _ in range(self.rng.randint(0, 6)))
        return f"{self.uid}#{self.sent_count} {pieces}"

    async def operation(self, client: ChatClient,
                        events: ObjectReceiveStream[Event]) -> None:
        rng = self.rng
        roll = rng.random()
        ledger = self.ledger
        if roll < 0.40 or (roll < 0.60 and not self.groups):
            to = rng.choice(self.others)
            text = self.text()
            ledger.ops["chat"] += 1
            msg_id = await self.call("chat", client.send_chat(to, text))
            if msg_id is not None:
                ledger.sent[msg_id] = Sent("chat", self.uid, (to,), text)
        elif roll < 0.60:
            g = rng.choice(self.groups)
            text = self.text()
            ledger.ops["group_chat"] += 1
            msg_id = await self.call("group_chat",
                                     client.send_group_chat(self.plan.group_ids[g], text))
            if msg_id is not None:
                members = self.plan.member_ids[g]
                ledger.sent[msg_id] = Sent(
                    "group", self.uid, tuple(m for m in members if m != self.uid), text)
        elif roll < 0.70:
            ledger.ops["add_friend"] += 1
            await self.call("add_friend", client.add_friend(rng.choice(self.others)))
        elif roll < 0.80:
            if self.pending_requests:
                requester = rng.choice(sorted(self.pending_requests))
                self.pending_requests.discard(requester)
                ledger.ops["answer_friend"] += 1
                accept = rng.random() < 0.7
                await self.call("answer_friend", client.answer_friend(requester, accept))
                if accept and self.last_ok:
                    self.friends.add(requester)
            else:
                ledger.ops["ping"] += 1
                await self.call("ping", client.ping())
        elif roll < 0.83:
            ledger.ops["remove_friend"] += 1
            friend = rng.choice(sorted(self.friends)) if self.friends else rng.choice(self.others)
            await self.call("remove_friend", client.remove_friend(friend))
            self.friends.discard(friend)
        elif roll < 0.84:
            ledger.ops["relogin"] += 1
            await self.relogin(client, events)
        else:
            ledger.ops["ping"] += 1
            await self.call("ping", client.ping())

    async def relogin(self, client: ChatClient, events: ObjectReceiveStream[Event]) -> None:
        await self.handle(client, events, None)
        await self.call("logout", client.logout())
        if not self.last_ok:
            return
        self.logged_in = False
        # What was pushed before the logout reply belongs to the old session (and, not
        # receipted, is stored: it comes again after the login).
        await self.handle(client, events, None)
        if await self.login(client, "login") is None:
            raise ConnectionLost("login after logout failed")

    async def quiesce(self, client: ChatClient, seconds: float) -> None:
        """Book and receipt what arrives until the connection is quiet, at most `seconds`."""
        events = client.events()
        limit = time.monotonic() + seconds
        while time.monotonic() < limit:
            first: Event | None = None
            with anyio.move_on_after(QUIET_SECONDS):
                try:
                    first = await events.receive()
                except anyio.EndOfStream:
                    return
            if first is None:
                return
            await self.handle(client, events, first)


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class OwnServer:
    """`python -m chatserver serve` on a free loopback port, its output in a log file."""

    def __init__(self, database: str, log_path: Path) -> None:
        self.database = database
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> OwnServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        for _attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "chatserver", "serve", "--host", HOST,
                     "--port", str(self.port), "--database", self.database,
                     "--connections-per-address", "0", "--registrations-per-minute", "0",
                     "--registrations-per-hour", "0"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection((HOST, self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"the server did not start; see {self.log_path}")

    def stop(self) -> int | None:
        """SIGTERM, then at most 20 s; SIGKILL after that. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode


def rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Sampler:
    pid: int | None
    every: float
    samples: list[tuple[float, str, int]] = field(default_factory=list)  # (t, phase, KiB)
    phase: str = "setup"

    async def run(self, started: float) -> None:
        if self.pid is None:
            return
        while True:
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - started, self.phase, value))
            await anyio.sleep(self.every)


async def soak(
    options: Options, port: int, pid: int | None
) -> tuple[Ledger, Sampler, dict[str, float]]:
    rng = random.Random(options.seed)
    run_id = f"{rng.getrandbits(32):08x}"
    ledger = Ledger()
    count = options.clients
    groups = max(1, min(options.groups, count // 2))
    size = max(2, min(20, count // 4))
    members = [[g % count, *rng.sample([i for i in range(count) if i != g % count], size - 1)]
               for g in range(groups)]
    plan = Plan(members=members, group_ids=[0] * groups)
    clients = [SoakClient(i, run_id, options, ledger, plan, port, random.Random(rng.random()))
               for i in range(count)]
    sampler = Sampler(pid, options.rss_every)
    figures: dict[str, float] = {}
    started = time.monotonic()
    registered, joined, operated, closed = (Barrier(count) for _ in range(4))
    gate = anyio.Semaphore(SETUP_CONCURRENCY)

    async def one(c: SoakClient) -> None:
        try:
            async with AsyncExitStack() as stack:
                # Connect only once it is this client's turn: the server closes connections
                # that stay silent for 30 s before logging in.
                async with gate:
                    client = await stack.enter_async_context(
                        connect(HOST, port, request_timeout=REQUEST_TIMEOUT))
                    await c.set_up(client)
                await registered.wait(ledger, c.index)
                if not plan.member_ids:
                    plan.member_ids = [[clients[i].uid for i in m] for m in plan.members]
                c.others = [o.uid for o in clients if o is not c and o.uid]
                await c.create_group(client, run_id)
                await c.join_groups(client)
                await joined.wait(ledger, c.index)
                if sampler.phase == "setup":
                    sampler.phase = "operations"
                    figures["setup_seconds"] = time.monotonic() - started
                await c.operate(client, time.monotonic() + options.seconds)
                await operated.wait(ledger, c.index)
                sampler.phase = "collect"
                # Messages sent in the last moments still arrive: book and receipt them.
                await c.quiesce(client, 10)
        except (ConnectionLost, OSError) as exc:
            ledger.error("connection lost", f"client {c.index} (user {c.uid}): {exc!r}")
        finally:
            # A client that failed early still meets the others, so nobody waits in vain.
            for g, members in enumerate(plan.members):
                if members[0] == c.index:
                    plan.settle(g, 0)
            for barrier in (registered, joined, operated, closed):
                await barrier.wait(ledger, c.index)
        # Every client logs in once more: what was stored for it comes now.
        await anyio.sleep(0.5)
        c.logged_in = False
        if not c.uid:
            return
        try:
            async with AsyncExitStack() as stack:
                async with gate:
                    client = await stack.enter_async_context(
                        connect(HOST, port, request_timeout=REQUEST_TIMEOUT))
                    result = await c.login(client, "final login")
                if result is not None:
                    await c.quiesce(client, COLLECT_SECONDS)
        except (ConnectionLost, OSError) as exc:
            ledger.error("connection lost", f"final login of user {c.uid}: {exc!r}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run, started)
        with anyio.fail_after(options.seconds + 6 * BARRIER_TIMEOUT):
            async with anyio.create_task_group() as clients_group:
                for c in clients:
                    clients_group.start_soon(one, c)
        tg.cancel_scope.cancel()
    figures["total_seconds"] = time.monotonic() - started
    return ledger, sampler, figures


def check(options: Options, ledger: Ledger, sampler: Sampler, figures: dict[str, float],
          log_text: str | None, exit_code: int | None, report: Report) -> None:
    out, fail = report.lines.append, report.failures.append
    expected = delivered = missing = redelivered = wrong_text = 0
    missing_samples: list[str] = []
    for msg_id, sent in ledger.sent.items():
        for uid in sent.recipients:
            expected += 1
            sessions = ledger.delivered.get(uid, {}).get(msg_id)
            if not sessions:
                missing += 1
                if len(missing_samples) < 10:
                    missing_samples.append(f"{sent.kind} msg_id {msg_id} from {sent.sender} "
                                           f"to {uid}")
                continue
            delivered += 1
            redelivered += len(sessions) - 1
            if ledger.texts.get((uid, msg_id)) != sent.text:
                wrong_text += 1
    unacked = sum(1 for per_user in ledger.delivered.values() for m in per_user
                  if m not in ledger.sent and m not in ledger.notices)
    chats = sum(1 for s in ledger.sent.values() if s.kind == "chat")
    out(f"soak: {options.clients} clients, {options.seconds:.0f} s of operations, "
        f"setup {figures.get('setup_seconds', 0):.1f} s, total {figures['total_seconds']:.1f} s")
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(ledger.ops.items()))
    out(f"  operations: {sum(ledger.ops.values())} ({by_kind})")
    out(f"  messages acknowledged: {len(ledger.sent)} ({chats} one-to-one, "
        f"{len(ledger.sent) - chats} group), deliveries owed {expected}")
    out(f"  delivered: {delivered} of {expected}; missing {missing}; wrong text {wrong_text}; "
        f"delivered again before a receipt (allowed) {redelivered}; "
        f"chats delivered whose send got no acknowledgement {unacked}")
    out(f"  pushes seen: {', '.join(f'{k} {v}' for k, v in sorted(ledger.events.items()))}; "
        f"receipt requests {ledger.receipts_sent}")
    out(f"  duplicates: after an acknowledged receipt {len(ledger.after_receipt)}, "
        f"twice in one session {len(ledger.same_session)}")
    out(f"  expected errors: {dict(ledger.expected_errors) or 'none'}; "
        f"errors: {dict(ledger.errors) or 'none'}")
    for sample in ledger.error_samples[:10]:
        out(f"    error: {sample}")
    if missing:
        fail(f"{missing} acknowledged deliveries never arrived, e.g. {missing_samples}")
    if wrong_text:
        fail(f"{wrong_text} deliveries arrived with another text than was sent")
    if ledger.after_receipt:
        fail(f"{len(ledger.after_receipt)} messages came again after their receipt: "
             f"{ledger.after_receipt[:5]}")
    if ledger.same_session:
        fail(f"{len(ledger.same_session)} messages came twice in one session: "
             f"{ledger.same_session[:5]}")
    if ledger.errors:
        fail(f"errors: {dict(ledger.errors)}")
    if ledger.barrier_timeouts:
        fail(f"{ledger.barrier_timeouts} clients waited in vain for the others")
    if not ledger.sent:
        fail("no message was acknowledged at all")

    ops = [(t, kib) for t, phase, kib in sampler.samples if phase == "operations"]
    if sampler.samples:
        every = ", ".join(f"{t:.0f}s:{kib / 1024:.0f}" for t, _, kib in sampler.samples)
        out(f"  server RSS (MiB) at time since start: {every}")
    if len(ops) >= 4:
        first, last, peak = ops[0][1], ops[-1][1], max(kib for _, kib in ops)
        # Flat: the second half of the operations does not keep growing the way a leak does.
        # Medians of the second and the last quarter, so that one spike (a password hash
        # takes 16 MiB for a moment) decides nothing.
        n = len(ops)
        second = ops[n // 4 : max(n // 2, n // 4 + 1)]
        fourth = ops[(3 * n) // 4 :]
        before, after = median(k for _, k in second), median(k for _, k in fourth)
        minutes = max((median(t for t, _ in fourth) - median(t for t, _ in second)) / 60, 1e-9)
        growth = after - before
        out(f"  server RSS during operations: first {first / 1024:.1f} MiB, last "
            f"{last / 1024:.1f} MiB, max {peak / 1024:.1f} MiB; median of the second quarter "
            f"{before / 1024:.1f} MiB, of the last quarter {after / 1024:.1f} MiB "
            f"({growth / 1024 / minutes:+.2f} MiB/min)")
        allowed = max(RSS_SLACK_MIB, options.rss_tolerance * minutes) * 1024
        if growth > allowed:
            fail(f"server RSS is not flat: it grew {growth / 1024:.1f} MiB "
                 f"({growth / 1024 / minutes:+.2f} MiB/min) between the second and the last "
                 f"quarter of the operations (allowed {allowed / 1024:.1f} MiB)")
    elif sampler.pid is not None:
        out("  server RSS: too few samples to judge (run longer)")
    else:
        out("  server RSS: not sampled (no --server-pid)")

    if log_text is None:
        out("  server log: not read (no --server-log)")
    else:
        lines = log_text.splitlines()
        bad = [line for line in lines if "Traceback" in line or " ERROR " in line]
        warnings = [line for line in lines if " WARNING " in line]
        out(f"  server log: {len(lines)} lines, {len(bad)} Traceback/ERROR, "
            f"{len(warnings)} WARNING")
        for line in warnings[:5]:
            out(f"    warning: {line[:200]}")
        if bad:
            fail(f"the server log holds {len(bad)} Traceback/ERROR lines, e.g. {bad[:3]}")
    if exit_code is not None or sampler.pid is not None:
        out(f"  server exit code on SIGTERM: {exit_code}")
    report.lines.append("  result: " + ("PASS" if not report.failures else "FAIL"))
    for failure in report.failures:
        report.lines.append(f"  FAILURE: {failure}")


def run(options: Options, *, echo: bool = True) -> Report:
    """The whole soak: server, clients, checks. Prints the figures when `echo`."""
    report = Report()
    server: OwnServer | None = None
    log_path = options.server_log
    pid = options.server_pid
    if options.port is None:
        directory = options.log_dir or Path(tempfile.mkdtemp(prefix="chatserver-soak-"))
        log_path = directory / "server.log"
        server = OwnServer(options.database, log_path).start()
        assert server.proc is not None
        port, pid = server.port, server.proc.pid
        report.lines.append(f"soak: server on {HOST}:{port} ({options.database}), log {log_path}")
    else:
        port = options.port
    exit_code = None
    try:
        ledger, sampler, figures = anyio.run(soak, options, port, pid)
    finally:
        if server is not None:
            exit_code = server.stop()
    log_text = None
    if log_path is not None and log_path.exists():
        log_text = log_path.read_bytes().decode("utf-8", errors="replace")
    check(options, ledger, sampler, figures, log_text, exit_code, report)
    if server is not None and exit_code != 0:
        report.failures.append(f"the server exited with {exit_code} on SIGTERM")
        report.lines.append(f"  FAILURE: the server exited with {exit_code} on SIGTERM")
    if echo:
        print("\n".join(report.lines), flush=True)
    return report


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.soak",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of the random operations (setup and collection come on top)")
    parser.add_argument("--port", type=int, help="use the server already on 127.0.0.1:PORT")
    parser.add_argument("--database", default="memory://",
                        help="database of the server this starts (default memory://)")
    parser.add_argument("--server-pid", type=int, help="with --port: sample this PID's RSS")
    parser.add_argument("--server-log", type=Path, help="with --port: check this log file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="mean seconds between one client's operations")
    parser.add_argument("--rss-tolerance", type=float, default=0.5, metavar="MIB_PER_MIN",
                        help="RSS growth during the operations still called flat "
                             f"(at least {RSS_SLACK_MIB} MiB in all)")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.seconds <= 0:
        parser.error("need at least 2 clients and some seconds")
    return Options(clients=args.clients, seconds=args.seconds, port=args.port,
                   database=args.database, server_pid=args.server_pid,
                   server_log=args.server_log, seed=args.seed, groups=args.groups,
                   interval=args.interval, rss_tolerance=args.rss_tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    return 0 if run(parse(argv)).ok else 1
