"""The composition root: reads a Config, builds the adapters and wires them to the core."""

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import TaskStatus
from attrs import define, evolve, field

from chatserver.adapters.clock import SystemClock
from chatserver.adapters.memory.cluster import InProcessCluster, InProcessHub
from chatserver.adapters.memory.outbox import MemoryOutbox
from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.metrics import PrometheusMetrics, TimedUnitOfWork
from chatserver.adapters.mysql.unit_of_work import open_mysql, upgrade_mysql
from chatserver.adapters.mysql.url import InvalidMySqlUrl, redact_password
from chatserver.adapters.redis.cluster import DEFAULT_LEASE_SECONDS, RedisCluster
from chatserver.adapters.security import DEFAULT_COST, ScryptHasher
from chatserver.adapters.sqlite.unit_of_work import open_sqlite, upgrade_sqlite
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.application.accounts import end_session
from chatserver.application.commands import Command
from chatserver.application.connection import Connection
from chatserver.application.inbound import NodeInbox
from chatserver.application.node import Limits, Node, NoMetrics
from chatserver.application.pruning import prune_history
from chatserver.application.results import Result
from chatserver.domain.errors import Unavailable
from chatserver.domain.messages import Event
from chatserver.domain.ports import (
    BusHandler,
    Clock,
    MessageBus,
    PasswordHasher,
    Presence,
    UnitOfWork,
)

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
    # How long a node that stops renewing its lease (e.g. SIGKILLed) still counts as alive.
    node_lease_seconds: float = DEFAULT_LEASE_SECONDS
    limits: Limits = field(factory=Limits)
    transport: TransportLimits = field(factory=TransportLimits)
    # Behind nginx every client has nginx's address: limits per address would hit everyone.
    behind_proxy: bool = False
    # Behind nginx with `proxy_protocol on;`: each connection names its client, so limits per
    # address apply to the real addresses (behind_proxy is then not needed, and ignored).
    proxy_protocol: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None
    # The web page and WebSocket endpoint (/ws) on this port; None: off.
    ws_port: int | None = None

    def transport_limits(self) -> TransportLimits:
        if self.proxy_protocol and (self.tls_cert or self.tls_key):
            raise ConfigError(
                "--proxy-protocol with TLS is not supported: let nginx terminate TLS"
            )
        per_address = (
            0 if self._blind_to_addresses() else self.transport.connections_per_address
        )
        return evolve(
            self.transport,
            frame_bytes=self.frame_limit,
            connections_per_address=per_address,
            proxy_protocol=self.proxy_protocol,
        )

    def node_limits(self) -> Limits:
        if self._blind_to_addresses():
            return evolve(self.limits, failed_logins_per_address=0)
        return self.limits

    def _blind_to_addresses(self) -> bool:
        """Every client seems to come from the proxy: limits per address are off."""
        return self.behind_proxy and not self.proxy_protocol


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
    if url.startswith("mysql:"):
        try:
            return await open_mysql(url)
        except (InvalidMySqlUrl, Unavailable) as error:
            raise ConfigError(str(error)) from error
    raise ConfigError(
        f"unsupported database URL {redact_password(url)!r}: "
        "use sqlite:///FILE, mysql://USER:PASSWORD@HOST:PORT/DATABASE or memory://"
    )


def upgrade_database(url: str) -> int:
    """Create or migrate the schema; return its version."""
    if url == "memory://":
        return 0
    if url.startswith("sqlite:"):
        return upgrade_sqlite(sqlite_path(url))
    if url.startswith("mysql:"):
        try:
            return upgrade_mysql(url)
        except (InvalidMySqlUrl, Unavailable) as error:
            raise ConfigError(str(error)) from error
    raise ConfigError(
        f"unsupported database URL {redact_password(url)!r}: "
        "use sqlite:///FILE, mysql://USER:PASSWORD@HOST:PORT/DATABASE or memory://"
    )


@define(eq=False)
class ChatApp:
    """A running node, for the server and for programs that embed the chat in-process."""

    node: Node
    metrics: PrometheusMetrics | None = None

    def connect(self) -> "EmbeddedClient":
        """A client without a socket: requests go straight to the use cases."""
        outbox = MemoryOutbox()
        return EmbeddedClient(Connection(self.node, outbox), outbox)

    async def stop(self) -> None:
        """Log every session out, keeping how far each device got."""
        for session in self.node.sessions.all():
            try:
                await end_session(session, node=self.node, reason="server stopping")
            except Exception:
                log.exception("logging out user %d failed", session.user.id)


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


class Cluster(Protocol):
    """How a node meets the others: presence, the bus, and a task that keeps it connected."""

    @property
    def node_id(self) -> str: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def bus(self) -> MessageBus: ...

    async def run(
        self,
        inbox: BusHandler,
        local_users: Callable[[], list[tuple[int, str, int]]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None: ...


def open_cluster(config: Config, hub: InProcessHub | None) -> Cluster:
    if config.bus == "memory://":
        return InProcessCluster(hub or InProcessHub(), config.node_id)
    if config.bus.startswith("redis://"):
        # A restarted node must not be taken for its former self: its sessions are gone.
        return RedisCluster(
            config.bus,
            f"{config.node_id}.{secrets.token_hex(3)}",
            lease_seconds=config.node_lease_seconds,
        )
    raise ConfigError(f"unsupported bus URL {config.bus!r}: use memory:// or redis://HOST:PORT/DB")


@asynccontextmanager
async def bootstrap(
    config: Config,
    *,
    hub: InProcessHub | None = None,
    hasher: PasswordHasher | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[ChatApp]:
    """Build a node from config and run its background work; on exit, log its sessions out,
    store what it still holds for others, and close the database.

    Pass one hub to several bootstraps to run a cluster of nodes inside one process.
    """
    cluster = open_cluster(config, hub)
    uow = await open_database(config.database)
    metrics = PrometheusMetrics() if config.metrics_port is not None else None
    node = Node(
        node_id=cluster.node_id,
        uow=TimedUnitOfWork(uow, metrics) if metrics else uow,
        hasher=hasher or ScryptHasher(n=config.hash_cost),
        clock=clock or SystemClock(),
        presence=cluster.presence,
        bus=cluster.bus,
        limits=config.node_limits(),
        metrics=metrics or NoMetrics(),
    )
    if metrics is not None:
        metrics.count_sessions(lambda: len(node.sessions))
        if isinstance(cluster, RedisCluster):
            cluster.observe_calls(metrics.dependency.labels("redis").observe)
    app = ChatApp(node, metrics)
    try:
        async with anyio.create_task_group() as background:
            await background.start(cluster.run, NodeInbox(node), node.sessions.claims)
            background.start_soon(node.gaps.run)
            background.start_soon(
                partial(prune_history, node.uow, node.clock, node.limits.history_days)
            )
            try:
                yield app
            finally:
                with anyio.CancelScope(shield=True):
                    await app.stop()
                background.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The task group wraps what the caller's block raised: give it back as it was.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await uow.aclose()
