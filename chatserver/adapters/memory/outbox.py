"""An outbox that keeps a session's events in memory: for embedding the chat without sockets."""

from collections.abc import Awaitable, Callable

import anyio
from attrs import Factory, define

from chatserver.domain.messages import Event


@define(eq=False)
class MemoryOutbox:
    """Collects the events pushed to one embedded client, in order."""

    events: list[Event] = Factory(list)
    limit: int = 10_000
    closed: bool = False
    close_reason: str | None = None  # why the server closed it, once it has
    _arrived: anyio.Event = Factory(anyio.Event)
    _after_flush: list[Callable[[], Awaitable[None]]] = Factory(list)

    def push(self, event: Event) -> bool:
        if self.closed or len(self.events) >= self.limit:
            return False
        self.events.append(event)
        self._arrived.set()
        return True

    def after_flush(self, callback: Callable[[], Awaitable[None]]) -> None:
        # Nothing is in flight in memory: what is queued counts as written.
        self._after_flush.append(callback)

    def close(self, reason: str = "closed by the server") -> None:
        self.closed = True
        self.close_reason = reason
        self._arrived.set()

    async def flush(self) -> None:
        callbacks, self._after_flush = self._after_flush, []
        for callback in callbacks:
            await callback()

    async def next_event(self) -> Event:
        """Wait for the next event and take it."""
        while not self.events:
            if self.closed:
                raise anyio.EndOfStream
            await self._arrived.wait()
            self._arrived = anyio.Event()
        return self.events.pop(0)
