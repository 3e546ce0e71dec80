"""The throttles in front of the password hasher, on an in-process node: registrations per
address, the login throttle's reservation, no lockout of the owner, and the fair hash queue."""

import time

import anyio
import pytest
from attrs import evolve

from chatserver.adapters.security import ScryptHasher
from chatserver.application.commands import Command, Login, Register
from chatserver.application.node import Limits
from chatserver.application.results import GroupJoined, LoggedIn, Registered
from chatserver.application.throttle import FailureWindow, HashQueue
from chatserver.domain.errors import (
    ChatError,
    InvalidCredentials,
    NameTaken,
    RateLimited,
    Unavailable,
)
from chatserver.entrypoints.bootstrap import ChatApp, Config, EmbeddedClient, bootstrap
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio


class CountingHasher:
    """FAST_HASHER, counting its hashes and verifies, each taking `seconds`."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.hashes = self.verifies = 0
        self.seconds = seconds

    async def hash(self, password: str) -> str:
        self.hashes += 1
        await anyio.sleep(self.seconds)
        return await FAST_HASHER.hash(password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        self.verifies += 1
        await anyio.sleep(self.seconds)
        return await FAST_HASHER.verify(password, password_hash)


def client_at(chat: ChatApp, address: str) -> EmbeddedClient:
    client = chat.connect()
    client.connection.address = address
    return client


async def outcome(client: EmbeddedClient, command: Command) -> object:
    try:
        return await client.request(command)
    except ChatError as error:
        return type(error)


async def test_a_taken_name_is_refused_without_hashing() -> None:
    hasher = CountingHasher()
    async with bootstrap(Config(database="memory://"), hasher=hasher) as chat:
        await client_at(chat, "10.0.0.1").request(Register("alice", "pw"))
        assert hasher.hashes == 1
        for _ in range(50):
            assert await outcome(client_at(chat, "10.0.0.2"), Register("alice", "x")) is NameTaken
        # Nor its case variants, nor look-alikes (an all-Cyrillic "ѕсоре" for "scope").
        await client_at(chat, "10.0.0.1").request(Register("scope", "pw"))
        for name in ("ALICE", "Alice", "\u0455\u0441\u043e\u0440\u0435"):
            assert await outcome(client_at(chat, "10.0.0.3"), Register(name, "x")) is NameTaken
        assert hasher.hashes == 2


async def test_registrations_per_address_are_limited_per_minute_and_others_go_on() -> None:
    limits = Limits(registrations_per_minute=3, registrations_per_hour=5)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        results = [await outcome(client_at(chat, "10.0.0.1"), Register(f"a{n}", "pw"))
                   for n in range(6)]
        assert [isinstance(r, Registered) for r in results[:3]] == [True] * 3
        assert results[3:] == [RateLimited] * 3
        # Another address is not affected.
        assert isinstance(await client_at(chat, "10.0.0.2").request(Register("b", "pw")),
                          Registered)


async def test_a_failed_registration_does_not_count_against_the_address() -> None:
    limits = Limits(registrations_per_minute=2)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        await client_at(chat, "10.0.0.9").request(Register("taken", "pw"))
        for _ in range(5):
            assert await outcome(client_at(chat, "10.0.0.1"), Register("taken", "pw")) is NameTaken
        for n in range(2):
            await client_at(chat, "10.0.0.1").request(Register(f"fresh{n}", "pw"))


async def test_parallel_wrong_passwords_pass_the_throttle_no_more_than_its_limit() -> None:
    hasher = CountingHasher(seconds=0.01)
    async with bootstrap(Config(database="memory://"), hasher=hasher) as chat:
        victim = (await client_at(chat, "10.0.0.9").request(Register("victim", "right")))
        assert isinstance(victim, Registered)
        results: list[object] = []

        async def guess() -> None:
            results.append(await outcome(client_at(chat, "10.0.0.1"),
                                         Login("wrong", user_id=victim.user_id)))

        async with anyio.create_task_group() as tg:
            for _ in range(150):
                tg.start_soon(guess)
        limit = Limits().failed_logins_per_account_and_address
        assert results.count(InvalidCredentials) == limit
        assert results.count(RateLimited) == 150 - limit
        assert hasher.verifies == limit


async def test_parallel_guesses_at_many_accounts_stop_at_the_address_limit() -> None:
    async with bootstrap(Config(database="memory://"), hasher=FAST_HASHER) as chat:
        results: list[object] = []

        async def guess(user_id: int) -> None:
            results.append(await outcome(client_at(chat, "10.0.0.1"),
                                         Login("wrong", user_id=user_id)))

        async with anyio.create_task_group() as tg:
            for user_id in range(1000, 1150):
                tg.start_soon(guess, user_id)
        limit = Limits().failed_logins_per_address
        assert results.count(InvalidCredentials) == limit
        assert results.count(RateLimited) == 150 - limit


async def test_a_stranger_cannot_lock_the_owner_out(chat: ChatApp) -> None:
    owner = await client_at(chat, "10.0.0.9").request(Register("owner", "right"))
    assert isinstance(owner, Registered)
    for _ in range(30):  # far past the limit, from the attacker's address
        await outcome(client_at(chat, "10.0.0.1"), Login("guess", user_id=owner.user_id))
    assert await outcome(client_at(chat, "10.0.0.1"),
                         Login("right", user_id=owner.user_id)) is RateLimited
    started = time.perf_counter()
    assert isinstance(await client_at(chat, "10.0.0.9").request(
        Login("right", user_id=owner.user_id)), LoggedIn)
    print(f"owner's login during the attack: {time.perf_counter() - started:.3f} s")


async def test_guesses_from_everywhere_slow_the_account_down_but_never_lock_it() -> None:
    limits = Limits(failed_logins_before_slowing=20, slowed_login_seconds=0.3)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        owner = await client_at(chat, "10.0.0.9").request(Register("owner", "right"))
        assert isinstance(owner, Registered)
        for n in range(25):  # a botnet: each address stays under its own limits
            await outcome(client_at(chat, f"10.1.0.{n}"), Login("guess", user_id=owner.user_id))
        started = time.perf_counter()
        assert isinstance(await client_at(chat, "10.0.0.9").request(
            Login("right", user_id=owner.user_id)), LoggedIn)
        took = time.perf_counter() - started
        print(f"owner's login with the account under a distributed guess: {took:.3f} s")
        assert 0.3 <= took < 2.0
        started = time.perf_counter()
        await outcome(client_at(chat, "10.1.1.1"), Login("guess", user_id=owner.user_id))
        assert time.perf_counter() - started >= 0.3  # the guessers are slowed down too


async def test_a_right_password_takes_its_reservation_back() -> None:
    limits = Limits(failed_logins_per_address=5)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        me = await client_at(chat, "10.0.0.1").request(Register("me", "pw"))
        assert isinstance(me, Registered)
        for _ in range(20):  # one address, many right logins: nothing counted
            assert isinstance(await client_at(chat, "10.0.0.1").request(
                Login("pw", user_id=me.user_id)), LoggedIn)


async def test_failure_windows_release_a_reservation() -> None:
    window = FailureWindow(limit=2, window_seconds=60)
    window.fail("a", now=1)
    window.fail("a", now=2)
    assert window.blocked("a", now=3)
    window.release("a", 2)
    assert not window.blocked("a", now=3)
    window.release("a", 1)
    assert "a" not in window.failures


async def test_the_hash_queue_serves_logins_first_and_addresses_in_turn() -> None:
    queue = HashQueue(slots=1)
    order: list[str] = []
    gate = anyio.Event()

    async def hash_for(kind: str, address: str, tag: str) -> None:
        async with queue.slot(kind, address):  # type: ignore[arg-type]
            if tag == "first":
                await gate.wait()
            order.append(tag)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hash_for, "register", "x", "first")
        await anyio.wait_all_tasks_blocked()
        for n in range(3):
            tg.start_soon(hash_for, "register", "attacker", f"reg{n}")
        for n in range(3):
            tg.start_soon(hash_for, "login", "attacker", f"atk{n}")
        tg.start_soon(hash_for, "login", "bystander", "bystander")
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert order == ["first", "atk0", "bystander", "atk1", "atk2", "reg0", "reg1", "reg2"]
    assert queue.busy == 0 and queue.waiting == 0


async def test_the_hash_queue_refuses_at_once_past_its_bounds() -> None:
    queue = HashQueue(slots=1, waiting_per_address=2, waiting_logins=3,
                      waiting_registrations=1)
    gate = anyio.Event()
    refused: list[object] = []

    async def hold(kind: str, address: str) -> None:
        try:
            async with queue.slot(kind, address):  # type: ignore[arg-type]
                await gate.wait()
        except (RateLimited, Unavailable) as error:
            refused.append((kind, address, type(error)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, "login", "a")  # the slot
        await anyio.wait_all_tasks_blocked()
        for address in ("a", "a", "a", "b", "c"):
            tg.start_soon(hold, "login", address)
        tg.start_soon(hold, "register", "d")
        tg.start_soon(hold, "register", "e")
        await anyio.wait_all_tasks_blocked()
        assert refused == [
            ("login", "a", RateLimited), ("login", "c", Unavailable),
            ("register", "e", Unavailable),
        ]
        gate.set()
    assert queue.busy == 0 and queue.waiting == 0


async def test_a_waiter_cancelled_in_the_hash_queue_leaves_it_consistent() -> None:
    queue = HashQueue(slots=1)
    gate = anyio.Event()

    async def hold() -> None:
        async with queue.slot("login", "a"):
            await gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.05):
            async with queue.slot("login", "b"):
                pytest.fail("never granted while the slot is held")
        assert queue.waiting == 0
        gate.set()
    async with queue.slot("register", "c"):
        assert queue.busy == 1
    assert queue.busy == 0


async def test_a_real_hasher_behind_the_queue_keeps_a_login_fast_during_a_registration_flood(
) -> None:
    hasher = ScryptHasher(n=2**12)  # ~20 ms a hash
    limits = evolve(Limits(), registrations_per_minute=0, registrations_per_hour=0)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=hasher) as chat:
        me = await client_at(chat, "10.0.0.9").request(Register("me", "pw"))
        assert isinstance(me, Registered)
        latencies: list[float] = []
        quiet: list[float] = []  # a login with nothing else going on, in this same run
        for _ in range(3):
            started = time.perf_counter()
            assert isinstance(await client_at(chat, "10.0.0.9").request(
                Login("pw", user_id=me.user_id)), LoggedIn)
            quiet.append(time.perf_counter() - started)

        async def flood(n: int) -> None:
            await outcome(client_at(chat, f"10.2.{n // 250}.{n % 250}"), Register(f"f{n}", "pw"))

        async with anyio.create_task_group() as tg:
            for n in range(200):  # 200 addresses registering at once: ~2 s of hashing
                tg.start_soon(flood, n)
            await anyio.sleep(0.1)
            for _ in range(5):
                started = time.perf_counter()
                assert isinstance(await client_at(chat, "10.0.0.9").request(
                    Login("pw", user_id=me.user_id)), LoggedIn)
                latencies.append(time.perf_counter() - started)
        print("login latencies during a registration flood:",
              ", ".join(f"{s * 1000:.0f} ms" for s in latencies))
        # Behind the registrations in a first-come queue it would wait 200 hashes (seconds). CI
        # runs this beside other suites on 2 cores, so the bounds (0.3 s median, 1 s slowest on
        # a quiet machine) scale with the quiet login measured above: still far below 200.
        scale = max(1.0, sorted(quiet)[1] / 0.03)
        print(f"quiet login {sorted(quiet)[1] * 1000:.0f} ms: bounds x{scale:.1f}")
        assert sorted(latencies)[2] < 0.3 * scale and max(latencies) < 1.0 * scale


async def test_a_program_embedding_the_chat_registers_without_the_address_limit() -> None:
    limits = Limits(registrations_per_minute=2)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        for n in range(5):
            assert isinstance(await chat.connect().request(Register(f"bot{n}", "pw")),
                              Registered)


async def test_repeated_registrations_of_a_taken_name_are_refused_without_the_database() -> None:
    limits = Limits(registration_attempts_per_minute=5)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        await client_at(chat, "10.0.0.9").request(Register("taken", "pw"))
        results = [await outcome(client_at(chat, "10.0.0.1"), Register("taken", "pw"))
                   for _ in range(8)]
        assert results == [NameTaken] * 5 + [RateLimited] * 3


async def test_the_metrics_endpoint_listens_on_loopback_whatever_the_chat_host() -> None:
    from chatserver.entrypoints.cli import build_parser

    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--metrics-port", "9100"])
    assert args.metrics_host == "127.0.0.1"


@pytest.mark.parametrize(
    "name",
    [
        "alice ", " alice", "ali\u200bce", "alice\u200b", "\u202eecila", "a\u202elice",
        "\u200b", "\u3164", "   ", "\u0301", "ali\x1bce", "ali\nce", "ali\x00ce", "ali\u2028ce",
        "Jose\u0301",  # NFD of José
        "\uff41lice",  # full-width a
        "\u2800",
    ],
)
async def test_names_that_disguise_or_hide_are_refused(chat: ChatApp, name: str) -> None:
    from chatserver.domain.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        await chat.connect().request(Register(name, "pw"))


@pytest.mark.parametrize("name", ["alice", "José", "张伟", "Ivan Petrov", "O'Brien", "ñandú",
                                  "مريم", "🙂 smile"])
async def test_ordinary_names_in_any_script_register(chat: ChatApp, name: str) -> None:
    assert isinstance(await chat.connect().request(Register(name, "pw")), Registered)


async def test_ipv6_addresses_are_limited_by_their_64() -> None:
    from chatserver.adapters.serving.settings import ConnectionsPerAddress
    from chatserver.application.throttle import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1" and address_key("local") == "local"
    per_address = ConnectionsPerAddress(2)
    assert per_address.admit("2001:db8:1:2::1") and per_address.admit("2001:db8:1:2::2")
    assert not per_address.admit("2001:db8:1:2:ffff::3")  # the same /64
    assert per_address.admit("2001:db8:1:3::1")  # another /64
    per_address.leave("2001:db8:1:2::1")
    assert per_address.admit("2001:db8:1:2::9")
    limits = Limits(failed_logins_per_address=3)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        results = [await outcome(client_at(chat, f"2001:db8:1:2::{n:x}"),
                                 Login("wrong", user_id=5000 + n)) for n in range(1, 6)]
        assert results == [InvalidCredentials] * 3 + [RateLimited] * 2
        assert await outcome(client_at(chat, "2001:db8:1:3::1"),
                             Login("wrong", user_id=6000)) is InvalidCredentials


def test_an_address_floods_when_its_connections_together_are_refused_too_often() -> None:
    """Issue 16.1: 300 connections each resending a refused REG a few times a second stay
    under any one connection's count; the address's count over all of them is what shows the
    flood (ConnectionsPerAddress.limited)."""
    from chatserver.adapters.tcp.budget import ConnectionsPerAddress

    per_address = ConnectionsPerAddress(512, limited_burst=5, limited_per_second=0.001)
    assert [per_address.limited("192.0.2.1") for _ in range(6)] == [False] * 5 + [True]
    assert per_address.limited("192.0.2.1")  # still flooding
    assert not per_address.limited("192.0.2.2")  # another address is not
    assert not per_address.limited("2001:db8::1") and per_address.limited("192.0.2.1")
    # Behind a proxy (no per-address limits) everyone shares an address: none is counted.
    shared = ConnectionsPerAddress(0, limited_burst=1)
    assert not any(shared.limited("127.0.0.1") for _ in range(10))


async def logged_in_client(chat: ChatApp, name: str) -> tuple[EmbeddedClient, int]:
    client = client_at(chat, "10.0.0.1")
    registered = await client.request(Register(name, "pw"))
    assert isinstance(registered, Registered)
    await client.request(Login("pw", user_id=registered.user_id))
    return client, registered.user_id


async def test_group_creation_is_limited_per_user_per_hour() -> None:
    from chatserver.application.commands import CreateGroup
    from chatserver.application.results import GroupCreated

    limits = Limits(groups_created_per_hour=5)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        spammer, _ = await logged_in_client(chat, "spammer")
        results = [await outcome(spammer, CreateGroup(f"g{n}")) for n in range(8)]
        assert [isinstance(r, GroupCreated) for r in results] == [True] * 5 + [False] * 3
        assert results[5:] == [RateLimited] * 3
        other, _ = await logged_in_client(chat, "other")
        assert isinstance(await other.request(CreateGroup("mine")), GroupCreated)


async def test_groups_per_user_are_capped_for_creating_and_joining() -> None:
    from chatserver.application.commands import CreateGroup, JoinGroup
    from chatserver.application.results import GroupCreated

    limits = Limits(groups_per_user=2, groups_created_per_hour=0)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        alice, _ = await logged_in_client(chat, "alice")
        bob, _ = await logged_in_client(chat, "bob")
        ids = []
        for n in range(2):
            created = await bob.request(CreateGroup(f"b{n}"))
            assert isinstance(created, GroupCreated)
            ids.append(created.group_id)
        assert await outcome(bob, CreateGroup("b2")) is RateLimited
        assert isinstance(await alice.request(JoinGroup(ids[0])), GroupJoined)
        assert isinstance(await alice.request(JoinGroup(ids[1])), GroupJoined)
        assert isinstance(await alice.request(JoinGroup(ids[1])), GroupJoined)  # again: still fine
        assert await outcome(alice, CreateGroup("a0")) is RateLimited


async def test_the_roster_cache_is_bounded() -> None:
    from chatserver.application.commands import CreateGroup, SendGroupMessage
    from chatserver.application.results import GroupCreated
    from chatserver.domain.errors import NotAMember

    limits = Limits(rosters_cached=3, groups_created_per_hour=0)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=FAST_HASHER) as chat:
        owner, _ = await logged_in_client(chat, "owner")
        stranger, _ = await logged_in_client(chat, "stranger")
        ids = []
        for n in range(6):
            created = await owner.request(CreateGroup(f"g{n}"))
            assert isinstance(created, GroupCreated)
            ids.append(created.group_id)
        for group_id in ids:  # a non-member's messages load rosters too
            assert await outcome(stranger, SendGroupMessage(group_id, "hi")) is NotAMember
        assert len(chat.node.groups.rosters) == 3


async def test_a_login_refused_by_the_hash_queue_does_not_count_as_a_failure() -> None:
    limits = Limits(hash_slots=1, logins_waiting=0, failed_logins_per_account_and_address=2)
    hasher = CountingHasher(seconds=0.2)
    async with bootstrap(Config(database="memory://", limits=limits), hasher=hasher) as chat:
        me = await client_at(chat, "10.0.0.9").request(Register("me", "right"))
        assert isinstance(me, Registered)
        results: list[object] = []

        async def guess() -> None:
            results.append(await outcome(client_at(chat, "10.0.0.1"),
                                         Login("wrong", user_id=me.user_id)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(guess)  # holds the only slot for 0.2 s
            await anyio.sleep(0.05)
            for _ in range(5):
                tg.start_soon(guess)  # nobody may wait: errno 11 at once
        assert sorted(map(str, results)) == sorted(
            map(str, [InvalidCredentials] + [Unavailable] * 5))
        # One failure counted, not six: one more guess is checked, then the limit holds.
        assert await outcome(client_at(chat, "10.0.0.1"),
                             Login("wrong", user_id=me.user_id)) is InvalidCredentials
        assert await outcome(client_at(chat, "10.0.0.1"),
                             Login("right", user_id=me.user_id)) is RateLimited
