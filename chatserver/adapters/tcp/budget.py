"""Budgets of a client: requests per second, and connections per address."""

import time

from chatserver.application.throttle import address_key


class RequestBudget:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def spend(self) -> bool:
        """Take one request's token; False if none is left (the request is refused)."""
        if self.tokens < 1:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
            self.updated = now
            if self.tokens < 1:
                return False
        self.tokens -= 1
        return True


class ConnectionsPerAddress:
    """Open connections counted by client address, against a limit (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection from address; False (and not counted) if over the limit.
        IPv6 addresses are counted by their /64."""
        address = address_key(address)
        count = self.open.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self.open[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        address = address_key(address)
        count = self.open[address] - 1
        if count:
            self.open[address] = count
        else:
            del self.open[address]
