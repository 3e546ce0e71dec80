"""The system clock, behind the Clock port so tests can hold time still."""

import time


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
