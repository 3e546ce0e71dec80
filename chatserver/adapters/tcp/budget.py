"""A token bucket: how many requests a connection may make, as a burst and per second."""

import time


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
