"""Login throttling: too many wrong passwords for one account, or from one address, and
logins there are refused for a while, even with the right password (errno 9)."""

from collections import deque

from attrs import Factory, define

from chatserver.domain.errors import RateLimited


@define
class FailureWindow:
    """Failures per key within a sliding window of time."""

    limit: int
    window_seconds: float
    failures: dict[str, deque[float]] = Factory(dict)

    def blocked(self, key: str, now: float) -> bool:
        times = self.failures.get(key)
        if times is None:
            return False
        while times and now - times[0] > self.window_seconds:
            times.popleft()
        if not times:
            del self.failures[key]
            return False
        return len(times) >= self.limit

    def fail(self, key: str, now: float) -> None:
        self.failures.setdefault(key, deque()).append(now)
        if len(self.failures) > 100_000:  # bounded: forget the oldest keys under attack
            for stale in list(self.failures)[:10_000]:
                del self.failures[stale]

    def forget(self, key: str) -> None:
        self.failures.pop(key, None)


@define
class LoginThrottle:
    per_account: FailureWindow
    per_address: FailureWindow | None  # None behind a proxy, where every client shares one

    def check(self, account: str, address: str, now: float) -> None:
        if self.per_account.blocked(account, now) or (
            self.per_address is not None and self.per_address.blocked(address, now)
        ):
            raise RateLimited("too many failed logins: wait a minute and try again")

    def failed(self, account: str, address: str, now: float) -> None:
        self.per_account.fail(account, now)
        if self.per_address is not None:
            self.per_address.fail(address, now)

    def succeeded(self, account: str) -> None:
        self.per_account.forget(account)
