"""Log lines to stderr, written once per turn of the event loop.

A line written to stderr is a write() of its own (stderr is line-buffered), and a syscall is
dear: two lines per login and logout, session start and end, cost more in their writes than
in being formatted. This handler keeps the lines the event loop's thread logs in one turn and
writes them together at the end of that turn (loop.call_soon), in order; a line logged
outside the event loop's thread, or with no loop running, is written at once, after what
waits. `flush()` (logging.shutdown at exit calls it) writes what waits. A process killed
meanwhile loses the lines of the turn it was in.

The time in each line is formatted once per second, not per line.
"""

import asyncio
import logging
import threading
import time
from typing import TextIO


class TurnBatchedHandler(logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._flushing_in: asyncio.AbstractEventLoop | None = None  # the loop a flush is due in

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()  # this thread's: it runs the flush
        except RuntimeError:
            loop = None
        with self._lock():
            self._waiting.append(line)
            if loop is None:
                self._write_waiting()
                return
            # A flush is due in this loop's turn (not in one that stopped before running it).
            schedule = self._flushing_in is not loop
            if schedule:
                self._flushing_in = loop
        if schedule:
            try:
                loop.call_soon(self.flush)
            except RuntimeError:  # the loop is closing: write now
                self.flush()

    def _lock(self) -> threading.RLock:
        lock = self.lock
        assert lock is not None
        return lock

    def flush(self) -> None:
        with self._lock():
            self._flushing_in = None
            self._write_waiting()
            super().flush()

    def _write_waiting(self) -> None:
        if self._waiting:
            text = "".join(self._waiting)
            self._waiting.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # as StreamHandler: a log line never fails the caller
                pass


class SecondsCachedFormatter(logging.Formatter):
    """logging.Formatter whose %(asctime)s is formatted once per second of record time."""

    _second: int = -1
    _text: str = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._text, record.msecs)
