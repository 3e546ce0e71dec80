"""The composition root: reads a Config, builds the adapters and wires them to the core."""

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
from attrs import define, field

from chatserver.adapters.clock import SystemClock
from chatserver.adapters.memory.cluster import InProcessBus, InProcessHub, InProcessPresence
from chatserver.adapters.memory.outbox import MemoryOutbox
from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.security import DEFAULT_COST, ScryptHasher
from chatserver.adapters.sqlite.unit_of_work import open_sqlite, upgrade_sqlite
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.application.accounts import end_session
from chatserver.application.commands import Command
from chatserver.application.connection import Connection
from chatserver.application.custody import keep_custody
from chatserver.application.inbound import NodeInbox
from chatserver.application.node import Limits, Node
from chatserver.application.results import Result
from chatserver.domain.messages import Event
from chatserver.domain.ports import Clock, PasswordHasher, UnitOfWork

log = logging.getLogger("chatserver")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@define
class Config:
    """Everything a node can be told; `chatserver serve --help` documents each."""

    host: str = "127.0.0.1"
    port: int = 6000
    database: str = "sqlite:///chatserver.db"
    bus: str = "memory://"
    node_id: str = field(factory=default_node_id)
    frame_limit: int = 65536
    hash_cost: int = DEFAULT_COST
    limits: Limits = field(factory=Limits)

    def transport_limits(self) -> TransportLimits:
        return TransportLimits(frame_bytes=self.frame_limit)


class ConfigError(ValueError):
    """A setting that cannot be used, with a message for the operator."""


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` is relative to the working directory, `sqlite:////abs.db` not."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"not a sqlite URL: {url!r} (try sqlite:///chatserver.db)")
    return Path(url[len(prefix) :])


async def open_database(url: str) -> UnitOfWork:
    if url == "memory://":
        return MemoryUnitOfWork()
    if url.startswith("sqlite:"):
        return await open_sqlite(sqlite_path(url))
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///FILE or memory://")


def upgrade_database(url: str) -> int:
    """Create or migrate the schema; return its version."""
    if url == "memory://":
        return 0
    if url.startswith("sqlite:"):
        return upgrade_sqlite(sqlite_path(url))
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///FILE or memory://")


@define(eq=False)
class ChatApp:
    """A running node, for the server and for programs that embed the chat in-process."""

    node: Node
    hub: InProcessHub

    def connect(self) -> "EmbeddedClient":
        """A client without a socket: requests go straight to the use cases."""
        outbox = MemoryOutbox()
        return EmbeddedClient(Connection(self.node, outbox), outbox)

    async def log_everyone_out(self) -> None:
        for session in self.node.sessions.all():
            await end_session(session, node=self.node)


@define(eq=False)
class EmbeddedClient:
    """One in-process user of the chat: send commands, read the events pushed to it."""

    connection: Connection
    outbox: MemoryOutbox

    async def request(self, command: Command) -> Result:
        result = await self.connection.handle(command)
        self.connection.replied()
        await self.outbox.flush()
        return result

    async def next_event(self) -> Event:
        """Wait for the next event pushed to this client and take it."""
        return await self.outbox.next_event()

    async def close(self) -> None:
        await self.connection.disconnect()


@asynccontextmanager
async def bootstrap(
    config: Config,
    *,
    hub: InProcessHub | None = None,
    hasher: PasswordHasher | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[ChatApp]:
    """Build a node from config; on exit, log its sessions out and close the database.

    Pass one hub to several bootstraps to run a cluster of nodes inside one process.
    """
    if config.bus != "memory://":
        raise ConfigError(f"unsupported bus URL {config.bus!r}: use memory://")
    hub = hub or InProcessHub()
    uow = await open_database(config.database)
    node = Node(
        node_id=config.node_id,
        uow=uow,
        hasher=hasher or ScryptHasher(n=config.hash_cost),
        clock=clock or SystemClock(),
        presence=InProcessPresence(hub),
        bus=InProcessBus(hub, config.node_id),
        limits=config.limits,
    )
    hub.attach(node.node_id, NodeInbox(node))
    app = ChatApp(node, hub)
    every = config.limits.custody_check_seconds
    try:
        async with anyio.create_task_group() as background:
            background.start_soon(partial(keep_custody, node.custody, every_seconds=every))
            try:
                yield app
            finally:
                background.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The task group wraps what the caller's block raised: give it back as it was.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await app.log_everyone_out()
            finally:
                hub.detach(node.node_id)
                await uow.aclose()
