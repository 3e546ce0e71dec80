"""A connection's output on its way to the kernel, sans-IO: frames queued and not yet written,
bytes the transport still held after the last write, and the after-flush callbacks (those
waiting for the next write, those written and waiting for the kernel to take every byte,
those ready to run). It decides when reading pauses for a reply backlog; the driver writes,
asks its transport what it holds, and runs the callbacks (run_callbacks)."""

import logging
from collections import deque

from chatserver.adapters.serving.requests import Callback

log = logging.getLogger("chatserver.tcp")


class OutputQueue:
    """What one connection has to send: queued, held by the transport, or to run after."""

    __slots__ = ("backlog", "backlogged", "callbacks", "frames", "held", "queued", "ready",
                 "written")

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog  # bytes held past which reading pauses (reply_backlog_bytes)
        self.frames: list[bytes] = []
        self.queued = 0  # bytes in frames
        self.held = 0  # held by the transport after the last write (an upper bound)
        self.callbacks: list[Callback] = []  # wait for the next write
        self.written: list[Callback] = []  # written, wait for the kernel to take the bytes
        self.ready: deque[Callback] = deque()  # to run, in order
        self.backlogged = False  # reading paused for what the transport holds

    @property
    def unsent(self) -> int:
        """Bytes queued or held by the transport, not yet taken by the kernel."""
        return self.queued + self.held

    @property
    def idle(self) -> bool:
        """Nothing is left to write nor to run."""
        return not (self.frames or self.callbacks or self.written or self.held or self.ready)

    def add(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.queued += len(frame)

    def take(self) -> tuple[list[bytes], list[Callback]]:
        """What the next write sends, and the callbacks that waited for it."""
        frames, callbacks = self.frames, self.callbacks
        self.frames, self.queued, self.callbacks = [], 0, []
        return frames, callbacks

    def drop(self) -> None:
        """close(): what is unsent is dropped."""
        self.frames, self.queued = [], 0

    def wrote(self, callbacks: list[Callback], held: int) -> bool:
        """A write went to a transport that now holds held bytes: callbacks run once the
        kernel has taken them. True if reading is to pause (the backlog is over the bound)."""
        self.written += callbacks
        self.held = held
        if held > self.backlog and not self.backlogged:
            self.backlogged = True
            return True
        return False

    def drained(self) -> bool:
        """The transport holds nothing more: what was written is ready to run. True if
        reading paused for the backlog is to go on."""
        self.held = 0
        if self.written:
            self.ready.extend(self.written)
            self.written = []
        if self.backlogged:
            self.backlogged = False
            return True
        return False

    async def run_ready(self, peer: str) -> None:
        """Run the callbacks that are ready, in order (one at a time)."""
        ready = self.ready
        while ready:
            await run_callbacks([ready.popleft()], peer)


async def run_callbacks(callbacks: list[Callback], peer: str) -> None:
    """Run after-flush callbacks in order; one that fails is logged, the rest still run."""
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            log.exception("after-write step for %s failed", peer)
