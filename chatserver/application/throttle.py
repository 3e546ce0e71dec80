"""Throttles in front of the password hasher, the scarce resource that logins and registrations
share (README, "Limits").

- Logins: a login is counted as a failure from the moment it is let through to the hasher
  (reserved before hashing, so parallel guesses cannot all pass the check), and taken back if
  the password was right. Wrong passwords are limited per (account, address) and per address,
  where they are refused (errno 9); per account from every address together, past a much
  larger ceiling, logins of that account are slowed down, never refused: a stranger cannot
  lock the owner out.
- Registrations: accounts created per address, within a minute and within an hour (errno 9).
- Hashing: a fixed number of slots (the hasher's threads); who waits for one waits in a fair
  queue, logins before registrations and round robin over client addresses, bounded per
  address (errno 9) and overall (errno 11): refused at once rather than waiting behind
  attackers.
"""

import ipaddress
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Literal

import anyio
from attrs import Factory, define, field

from chatserver.domain.errors import RateLimited, Unavailable
from chatserver.domain.ports import Clock

_MAX_KEYS = 100_000  # bounded: the oldest keys are forgotten under attack
# The address of an in-process client (Connection's default): the program embedding the chat
# itself, which is no network client and whose registrations are not limited.
EMBEDDED = "local"


@lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """What limits per address count by: an IPv4 address itself, an IPv6 address's /64 (one
    subscriber usually has a whole /64, and could take a fresh address for each request)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


@define
class FailureWindow:
    """Events (failures, registrations) per key within a sliding window of time."""

    limit: int  # 0: no limit
    window_seconds: float
    failures: dict[str, deque[float]] = Factory(dict)

    def count(self, key: str, now: float) -> int:
        times = self.failures.get(key)
        if times is None:
            return 0
        while times and now - times[0] > self.window_seconds:
            times.popleft()
        if not times:
            del self.failures[key]
            return 0
        return len(times)

    def blocked(self, key: str, now: float) -> bool:
        return bool(self.limit) and self.count(key, now) >= self.limit

    def fail(self, key: str, now: float) -> None:
        self.failures.setdefault(key, deque()).append(now)
        if len(self.failures) > _MAX_KEYS:
            for stale in list(self.failures)[: _MAX_KEYS // 10]:
                del self.failures[stale]

    def release(self, key: str, when: float) -> None:
        """Take back one event recorded at `when` (a reservation that turned out fine)."""
        times = self.failures.get(key)
        if times is not None:
            try:
                times.remove(when)
            except ValueError:
                return
            if not times:
                del self.failures[key]

    def forget(self, key: str) -> None:
        self.failures.pop(key, None)


@define(eq=False)
class LoginAttempt:
    """A login let through to the hasher: counted as failed until succeeded() or released()."""

    throttle: "LoginThrottle"
    account: str
    address: str
    at: float
    settled: bool = False

    def succeeded(self) -> None:
        """The password was right: the reservation is taken back, and so are this account's
        earlier failures from this address."""
        if self.settled:
            return
        self.settled = True
        throttle = self.throttle
        throttle.per_account_address.forget(_pair(self.account, self.address))
        throttle.per_account.release(self.account, self.at)
        if throttle.per_address is not None:
            throttle.per_address.release(self.address, self.at)

    def released(self) -> None:
        """No password was checked after all (the hasher refused it): nothing is counted."""
        if self.settled:
            return
        self.settled = True
        throttle = self.throttle
        throttle.per_account_address.release(_pair(self.account, self.address), self.at)
        throttle.per_account.release(self.account, self.at)
        if throttle.per_address is not None:
            throttle.per_address.release(self.address, self.at)


@define
class LoginThrottle:
    per_account_address: FailureWindow  # refuses past its limit
    per_address: FailureWindow | None  # refuses; None behind a proxy, where all share one
    per_account: FailureWindow  # from every address: slows down past its limit, never refuses
    slow_down_seconds: float = 1.0

    def delay(self, account: str, now: float) -> float:
        """How long a login of this account waits before it is tried (0 unless the account
        is being guessed at from everywhere)."""
        return self.slow_down_seconds if self.per_account.blocked(account, now) else 0.0

    async def attempt(self, account: str, address: str, clock: Clock) -> LoginAttempt:
        """reserve(), after the slowing down that delay() asks for."""
        delay = self.delay(account, clock.now_ms() / 1000)
        if delay:
            await anyio.sleep(delay)
        return self.reserve(account, address, clock.now_ms() / 1000)

    def reserve(self, account: str, address: str, now: float) -> LoginAttempt:
        """Let one login through to the hasher, counted as a failure until it succeeds;
        RateLimited if this address has failed too often, for this account or overall."""
        address = address_key(address)
        pair = _pair(account, address)
        if self.per_account_address.blocked(pair, now) or (
            self.per_address is not None and self.per_address.blocked(address, now)
        ):
            raise RateLimited("too many failed logins: wait a minute and try again")
        self.per_account_address.fail(pair, now)
        self.per_account.fail(account, now)
        if self.per_address is not None:
            self.per_address.fail(address, now)
        return LoginAttempt(self, account, address, now)


def _pair(account: str, address: str) -> str:
    return f"{account}@{address}"


@define
class RegistrationThrottle:
    """Accounts created per client address, within a minute and within an hour; and
    registration attempts (whatever their outcome) per address within a minute, so that a flood
    of REG for a taken name is refused before it costs a database lookup."""

    per_minute: FailureWindow
    per_hour: FailureWindow
    attempts: FailureWindow

    def attempt(self, address: str, now: float) -> None:
        """Count one REG from address; RateLimited past any of the limits."""
        if address == EMBEDDED:
            return
        address = address_key(address)
        if (self.attempts.blocked(address, now) or self.per_minute.blocked(address, now)
                or self.per_hour.blocked(address, now)):
            raise RateLimited("too many new accounts from your address: try again later")
        if self.attempts.limit:
            self.attempts.fail(address, now)

    def reserve(self, address: str, now: float) -> float:
        """Count one registration from address (taken back with release() if it fails);
        RateLimited past either limit."""
        if address == EMBEDDED:
            return now
        address = address_key(address)
        if self.per_minute.blocked(address, now) or self.per_hour.blocked(address, now):
            raise RateLimited("too many new accounts from your address: try again later")
        self.per_minute.fail(address, now)
        self.per_hour.fail(address, now)
        return now

    def release(self, address: str, when: float) -> None:
        address = address_key(address)
        self.per_minute.release(address, when)
        self.per_hour.release(address, when)


HashKind = Literal["login", "register"]


@define(eq=False)
class _Waiter:
    address: str
    granted: anyio.Event = Factory(anyio.Event)


@define(eq=False)
class HashQueue:
    """Admission to the password hasher: `slots` hashes at a time (its threads); the rest wait
    in a fair queue: logins before registrations, round robin over client addresses. Past
    `waiting_per_address` waiting from one address: RateLimited (errno 9); past the overall
    bound for its kind: Unavailable (errno 11), at once."""

    slots: int = 2
    waiting_per_address: int = 64
    waiting_logins: int = 256
    waiting_registrations: int = 8
    busy: int = 0
    _queues: dict[str, "OrderedDict[str, deque[_Waiter]]"] = field(
        factory=lambda: {"login": OrderedDict(), "register": OrderedDict()}
    )
    _waiting: dict[str, int] = field(factory=lambda: {"login": 0, "register": 0})
    _per_address: dict[str, int] = Factory(dict)

    @property
    def waiting(self) -> int:
        return self._waiting["login"] + self._waiting["register"]

    @asynccontextmanager
    async def slot(self, kind: HashKind, address: str) -> AsyncIterator[None]:
        if self.busy < self.slots and not self.waiting:
            self.busy += 1
        else:
            await self._wait(kind, address_key(address))
        try:
            yield
        finally:
            self._pass_on()

    async def _wait(self, kind: HashKind, address: str) -> None:
        if self._per_address.get(address, 0) >= self.waiting_per_address:
            raise RateLimited("too many logins and registrations at once from your address")
        bound = self.waiting_logins if kind == "login" else self.waiting_registrations
        if self._waiting[kind] >= bound:
            raise Unavailable(f"server busy: too many password checks waiting ({kind})")
        waiter = _Waiter(address)
        queue = self._queues[kind]
        queue.setdefault(address, deque()).append(waiter)
        self._waiting[kind] += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():  # granted, then cancelled: the slot goes on
                self._pass_on()
            else:
                self._forget(kind, waiter)
            raise

    def _pass_on(self) -> None:
        """A slot is free: hand it to the next waiter (logins first), or keep it free."""
        for kind in ("login", "register"):
            queue = self._queues[kind]
            if not queue:
                continue
            address, waiters = queue.popitem(last=False)
            waiter = waiters.popleft()
            if waiters:
                queue[address] = waiters  # to the back of the round
            self._left(kind, address)
            waiter.granted.set()
            return
        self.busy -= 1

    def _forget(self, kind: str, waiter: _Waiter) -> None:
        queue = self._queues[kind]
        waiters = queue.get(waiter.address)
        if waiters is None or waiter not in waiters:
            return
        waiters.remove(waiter)
        if not waiters:
            del queue[waiter.address]
        self._left(kind, waiter.address)

    def _left(self, kind: str, address: str) -> None:
        self._waiting[kind] -= 1
        count = self._per_address[address] - 1
        if count:
            self._per_address[address] = count
        else:
            del self._per_address[address]
