"""The composition root: reads a Config, builds the adapters and wires them to the core."""

import errno
import logging
import os
import secrets
import socket
import sqlite3
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus
from attrs import define, evolve, field, frozen

from chatserver.adapters.clock import SystemClock
from chatserver.adapters.connection_core import TransportLimits
from chatserver.adapters.memory.cluster import InProcessCluster, InProcessHub
from chatserver.adapters.memory.outbox import MemoryOutbox
from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.adapters.metrics import PrometheusMetrics, TimedUnitOfWork
from chatserver.adapters.mysql.unit_of_work import open_mysql, upgrade_mysql
from chatserver.adapters.mysql.url import InvalidMySqlUrl, redact_password
from chatserver.adapters.proxy_header import LOOPBACK, check_cidrs
from chatserver.adapters.redis.cluster import DEFAULT_LEASE_SECONDS, RedisCluster
from chatserver.adapters.redis.connection import FAILURES as REDIS_FAILURES
from chatserver.adapters.redis.connection import open_redis, split_url
from chatserver.adapters.security import DEFAULT_COST, ScryptHasher
from chatserver.adapters.serving.settings import ConnectionsPerAddress
from chatserver.adapters.sqlite.unit_of_work import open_sqlite, upgrade_sqlite
from chatserver.adapters.tcp.protocol_server import ProtocolServer
from chatserver.adapters.tcp.server import TcpServer
from chatserver.adapters.webhook import HttpWebhookSender, encode_event
from chatserver.application.accounts import TOKEN_ONLY_HASH
from chatserver.application.commands import Command, CreateGroup, JoinGroup
from chatserver.application.connection import Connection
from chatserver.application.dispatch import HANDLERS
from chatserver.application.hooks import AccountCreated, Authenticator, Hooks
from chatserver.application.inbound import NodeInbox
from chatserver.application.lifecycle import end_session
from chatserver.application.name_report import names_breaking_the_rules
from chatserver.application.node import Limits, Node, NoMetrics
from chatserver.application.pruning import prune_history
from chatserver.application.results import GroupCreated, LoggedIn, Result
from chatserver.application.sessions import Session
from chatserver.application.webhooks import WebhookDeliverer, WebhookLimits, WebhookRecorder
from chatserver.domain.errors import Unavailable, UnknownUser
from chatserver.domain.messages import Event
from chatserver.domain.ports import (
    BusHandler,
    Clock,
    MessageBus,
    PasswordHasher,
    Presence,
    Transaction,
    UnitOfWork,
)
from chatserver.domain.users import User, check_name, check_password

log = logging.getLogger("chatserver")

# How long stop_serving() lets requests in hand finish, sessions log out and output drain.
SHUTDOWN_GRACE_SECONDS = 10.0


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@define
class Config:
    """Everything a node can be told; `chatserver serve --help` documents each.

    Attributes:
        host: the address the listeners bind (`start_serving`).
        port: the TCP port; 0 takes any free one.
        database: `sqlite:///relative.db`, `sqlite:////absolute.db`,
            `mysql://USER:PASSWORD@HOST:PORT/DB` or `memory://` (keeps nothing).
        bus: how nodes reach each other: `memory://` (one node, or several in one process
            sharing a hub) or `redis://HOST:PORT/DB[?namespace=NAME]`.
        node_id: this node's name in a cluster.
        frame_limit: the largest frame in bytes.
        hash_cost: scrypt's n for new password hashes, a power of 2.
        node_lease_seconds: how long a node that stops renewing its lease still counts as alive.
        limits: the core's bounds per user and session.
        transport: the listeners' bounds per connection.
        behind_proxy: clients come through a proxy: limits per address are off.
        proxy_protocol: every connection begins with a PROXY protocol header.
        tls_cert: a PEM certificate chain: the listeners serve TLS (needs tls_key).
        tls_key: the PEM private key for tls_cert.
        metrics_port: serve Prometheus metrics at http://host:metrics_port/metrics; None: off.
        ws_port: serve the web page and the WebSocket endpoint (/ws) here; None: off.
        authenticator: the embedder's `async (token) -> user name | None`: a LOGIN may carry
            `token` instead of `password`; the account of the name it returns is created on
            first sight; None refuses the token (errno 1). Not set: tokens are errno 7.
        hooks: the embedder's `before_send` and `after_event` (see `Hooks`).
        webhook: POST every event after_event hears to this URL, durably (README, "Webhooks");
            None: off.
        webhook_secret: the HMAC-SHA256 key of the `X-Chatserver-Signature` header; required
            with webhook.
        webhook_limits: timeouts, retries and batches of webhook delivery.
        driver: how `start_serving()` (and so `chatserver serve`) drives its TCP connections
            by default: `"asyncio"` (asyncio Protocols) or `"anyio"` (anyio streams).
        event_loop: the event loop `chatserver serve` runs on: `"asyncio"` or `"uvloop"`.
        log_level: the threshold of the lines `chatserver serve` logs to stderr.
        gc: `"freeze"`: `chatserver serve` keeps the garbage collector off long-lived objects
            (entrypoints/collector.py); `"default"`: the collector as CPython sets it.
    """

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
    # The proxies (CIDR blocks) whose PROXY header or X-Forwarded-For is believed; empty:
    # loopback only (127.0.0.0/8, ::1), where `chatserver cluster` runs nginx.
    trusted_proxies: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None
    # Where the metrics endpoint listens: this machine only, unless told otherwise.
    metrics_host: str = "127.0.0.1"
    # The web page and WebSocket endpoint (/ws) on this port; None: off.
    ws_port: int | None = None
    # Origins whose pages may open /ws ("*": any); empty: the page's own origin only.
    allowed_origins: tuple[str, ...] = ()
    # Files shared in chats (served on the web port): the folder that keeps them (None: beside
    # a SQLite database, else off), and the key that signs their links (None: random, which
    # only a single node can use).
    files: str | None = None
    file_key: str | None = None
    authenticator: Authenticator | None = None
    hooks: Hooks = field(factory=Hooks)
    webhook: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_limits: WebhookLimits = field(factory=WebhookLimits)
    # How `chatserver serve` runs (the driver: start_serving's default).
    driver: Literal["asyncio", "anyio"] = field(
        default="asyncio", validator=lambda _c, _a, value: _one_of("--transport", value))
    event_loop: Literal["asyncio", "uvloop"] = field(
        default="asyncio", validator=lambda _c, _a, value: _one_of("--loop", value))
    log_level: str = field(default="INFO", validator=lambda _c, _a, value: _check_level(value))
    gc: Literal["freeze", "default"] = field(
        default="freeze", validator=lambda _c, _a, value: _one_of("--gc", value))

    def transport_limits(self) -> TransportLimits:
        if self.proxy_protocol and (self.tls_cert or self.tls_key):
            raise ConfigError(
                "--proxy-protocol with TLS is not supported: let nginx terminate TLS"
            )
        per_address = (
            0 if self._blind_to_addresses() else self.transport.connections_per_address
        )
        try:
            check_cidrs(self.trusted_proxies)
        except ValueError as error:
            raise ConfigError(f"--trusted-proxy: {error}") from None
        return evolve(
            self.transport,
            frame_bytes=self.frame_limit,
            connections_per_address=per_address,
            proxy_protocol=self.proxy_protocol,
            trusted_proxies=self.trusted_proxies or LOOPBACK,
        )

    def node_limits(self) -> Limits:
        if self._blind_to_addresses():
            return evolve(self.limits, failed_logins_per_address=0,
                          registrations_per_minute=0, registrations_per_hour=0,
                          registration_attempts_per_minute=0)
        return self.limits

    def _blind_to_addresses(self) -> bool:
        """Every client seems to come from the proxy: limits per address are off."""
        return self.behind_proxy and not self.proxy_protocol


class ConfigError(ValueError):
    """A setting that cannot be used, with a message for the operator."""


# The values of the settings that name a choice, by the option that sets them.
CHOICES = {
    "--transport": ("asyncio", "anyio"),
    "--loop": ("asyncio", "uvloop"),
    "--gc": ("freeze", "default"),
}


def _one_of(option: str, value: str) -> None:
    if value not in CHOICES[option]:
        raise ConfigError(f"{option} {value!r} is not one of: {', '.join(CHOICES[option])}")


def _check_level(level: str) -> None:
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ConfigError(f"--log-level {level!r} is not a level: use DEBUG, INFO, WARNING "
                          "or ERROR")


def listen_error(option: str, host: str, port: int, error: OSError) -> ConfigError:
    """One line for an operator whose port or address cannot be listened on (the metrics
    port's address is --metrics-host's, every other port's --host's)."""
    host_option = "--metrics-host" if option == "--metrics-port" else "--host"
    if error.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port {port} on {host} is already in use ({option}): stop what uses it "
            "or choose another port"
        )
    if error.errno == errno.EACCES:
        return ConfigError(
            f"not allowed to listen on port {port} ({option}): ports below 1024 need root; "
            "choose a port above 1023"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"cannot listen on {host} ({host_option}): this machine has no such address; "
            "use one of its addresses, 127.0.0.1 or 0.0.0.0"
        )
    return ConfigError(
        f"cannot listen on {host}:{port} ({option}): {error.strerror or error}; "
        f"check {host_option} and the port"
    )


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None for plain TCP."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ConfigError(f"cannot load the TLS certificate {cert} or key {key}: {why}; "
                          "correct --tls-cert and --tls-key") from error
    return context


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` is relative to the working directory, `sqlite:////abs.db` not."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"not a sqlite URL: {url!r} (try sqlite:///chatserver.db)")
    return Path(url[len(prefix) :])


def sqlite_error(path: Path, error: Exception) -> ConfigError:
    """One line saying why the SQLite file cannot be opened, and what to do."""
    folder = path.parent
    if not folder.exists():
        advice = f"the folder {folder} does not exist: create it (mkdir -p {folder})"
    elif not folder.is_dir():
        advice = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        advice = f"the folder {folder} is not writable by this user: allow it (chmod, chown)"
    else:
        advice = f"{error}: check the file and its permissions"
    return ConfigError(
        f"cannot open the SQLite database {path}: {advice}, or choose another --database"
    )


async def open_database(url: str) -> UnitOfWork:
    if url == "memory://":
        return MemoryUnitOfWork()
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        try:
            return await open_sqlite(path)
        except (sqlite3.Error, OSError) as error:
            raise sqlite_error(path, error) from error
    if url.startswith("mysql:"):
        try:
            return await open_mysql(url)
        except (InvalidMySqlUrl, Unavailable) as error:
            raise ConfigError(str(error)) from error
    raise ConfigError(
        f"unsupported database URL {redact_password(url)!r}: "
        "use sqlite:///FILE, mysql://USER:PASSWORD@HOST:PORT/DATABASE or memory://"
    )


async def check_names(url: str) -> list[str]:
    """The users and groups whose names break today's rules, a line each (after upgrading)."""
    uow = await open_database(url)
    try:
        return await uow.run(names_breaking_the_rules)
    finally:
        await uow.aclose()


def upgrade_database(url: str) -> int:
    """Create or migrate the schema; return its version."""
    if url == "memory://":
        return 0
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        try:
            return upgrade_sqlite(path)
        except (sqlite3.Error, OSError) as error:
            raise sqlite_error(path, error) from error
    if url.startswith("mysql:"):
        try:
            return upgrade_mysql(url, create_database=True)
        except (InvalidMySqlUrl, Unavailable) as error:
            raise ConfigError(str(error)) from error
    raise ConfigError(
        f"unsupported database URL {redact_password(url)!r}: "
        "use sqlite:///FILE, mysql://USER:PASSWORD@HOST:PORT/DATABASE or memory://"
    )


def bus_error(url: str, cause: BaseException) -> ConfigError:
    return ConfigError(
        f"cannot reach Redis at {redact_password(url)} (--bus): {str(cause).rstrip('.')}; "
        "start Redis there or correct --bus"
    )


async def check_bus(url: str) -> None:
    """Reach the bus, then let go: what every node will need, checked once before several
    start (`chatserver cluster`)."""
    if url.startswith("redis://"):
        client = open_redis(split_url(url)[0])
        try:
            await client.ping()
        except REDIS_FAILURES as error:
            raise bus_error(url, error) from error
        finally:
            await client.aclose()


@frozen
class Listening:
    """Where a node's listeners took their ports (what `ChatApp.start_serving` returns).

    Attributes:
        host: the address they listen on.
        port: the TCP port (the one taken, when Config.port was 0).
        web_port: the web page's and WebSocket's port, or None.
        metrics_port: the Prometheus metrics' port, or None.
        tls: whether the TCP and web ports speak TLS.
    """

    host: str
    port: int
    web_port: int | None = None
    metrics_port: int | None = None
    tls: bool = False


class _Listener(Protocol):
    """What a node needs of a listener: TcpServer, ProtocolServer, WebSocketServer."""

    async def serve(self, *, task_status: TaskStatus[int] = ...) -> None: ...

    async def shutdown(self) -> None: ...


def assemble_listeners(
    config: Config,
    node: Node,
    metrics: PrometheusMetrics | None,
    tls: ssl.SSLContext | None,
    transport: Literal["asyncio", "anyio"],
    files: Any,
) -> list[tuple[str, int, _Listener]]:
    """A node's listeners, each with the option that names its port: TCP (on asyncio Protocols
    or anyio streams), the web page and WebSocket when `ws_port` is set, the metrics when
    `metrics_port` is. The TCP and web listeners are built from the same settings, and share
    one count of connections per client address (TCP and WebSocket together)."""
    limits = config.transport_limits()
    per_address = ConnectionsPerAddress(limits.connections_per_address)
    settings: dict[str, Any] = {"tls": tls, "metrics": metrics, "per_address": per_address}
    tcp_class: type[TcpServer | ProtocolServer] = TcpServer
    if transport == "asyncio":
        tcp_class = ProtocolServer
    tcp = tcp_class(node, config.host, config.port, limits, **settings)
    listeners: list[tuple[str, int, _Listener]] = [("--port", config.port, tcp)]
    if config.ws_port is not None:
        from chatserver.adapters.web.server import WebSocketServer

        listeners.append(("--ws-port", config.ws_port, WebSocketServer(
            node, config.host, config.ws_port, limits, **settings,
            forwarded_for=config.behind_proxy or config.proxy_protocol,
            allowed_origins=config.allowed_origins, files=files,
        )))
    if metrics is not None and config.metrics_port is not None:
        from chatserver.adapters.web.metrics_server import MetricsServer

        listeners.append(("--metrics-port", config.metrics_port, MetricsServer(
            metrics.registry, config.metrics_host, config.metrics_port
        )))
    return listeners


@define(eq=False)
class _Serving:
    """The listeners started by one start_serving(), run by one task of the node's."""

    listeners: list[tuple[str, int, _Listener]]
    scope: anyio.CancelScope = field(factory=anyio.CancelScope)
    done: anyio.Event = field(factory=anyio.Event)

    async def run(self, host: str, *, task_status: TaskStatus[list[int]]) -> None:
        """Start every listener, then wait for them all to end; a port that cannot be taken
        stops those already listening and is raised as one ConfigError."""
        failure: ConfigError | None = None
        try:
            with self.scope:
                async with anyio.create_task_group() as listeners:
                    ports: list[int] = []
                    for option, port, listener in self.listeners:
                        try:
                            ports.append(await listeners.start(listener.serve))
                        except OSError as error:
                            # The metrics port listens on its own address.
                            where = getattr(listener, "host", host)
                            where = where if option == "--metrics-port" else host
                            failure = listen_error(option, where, port, error)
                            listeners.cancel_scope.cancel()
                            break
                    else:
                        task_status.started(ports)
        finally:
            self.done.set()
        if failure is not None:
            raise failure


@define(eq=False)
class ChatApp:
    """A running node, for the server and for programs that embed the chat in-process.

    Made by `open_node`; valid inside its block.

    Attributes:
        node: the core's state (sessions, router, ports), shared by every connection.
        metrics: the Prometheus metrics, when `Config.metrics_port` is set.
        config: the configuration the node was opened with.
    """

    node: Node
    metrics: PrometheusMetrics | None = None
    config: Config = field(factory=Config)
    _tasks: TaskGroup | None = field(default=None, init=False)
    _serving: _Serving | None = field(default=None, init=False)
    _files: Any = field(default=None, init=False)  # the web port's FileTransfers, if any

    def connect(self) -> "EmbeddedClient":
        """A client without a socket: requests go straight to the use cases."""
        outbox = MemoryOutbox()
        return EmbeddedClient(Connection(self.node, outbox), outbox)

    async def start_serving(
        self, transport: Literal["asyncio", "anyio"] | None = None
    ) -> Listening:
        """Listen for clients on the running event loop, beside whatever else it runs.

        TCP on `Config.port` (with TLS when `Config.tls_cert` is set), the web page and
        WebSocket on `Config.ws_port` and the Prometheus metrics on `Config.metrics_port` when
        those are set. Returns once every port is taken (logging where, as `chatserver serve`
        does); the listeners then run in the node's own tasks until `stop_serving()` or the end
        of the `open_node` block.

        Args:
            transport: `"asyncio"` (asyncio Protocols: less CPU per message and memory per
                connection) or `"anyio"` (anyio streams); by default `Config.driver`
                (`--transport`), which is `"asyncio"` unless set.

        Raises:
            ConfigError: a port or address that cannot be listened on, a TLS file that cannot
                be loaded, or settings that cannot work together; nothing is left listening.
            RuntimeError: outside the `open_node` block, or already serving.
        """
        if self._tasks is None:
            raise RuntimeError("start_serving() works inside `async with open_node(...)` only")
        if self._serving is not None:
            raise RuntimeError("this node is already serving: stop_serving() first")
        config = self.config
        tls = tls_context(config.tls_cert, config.tls_key)
        listeners = assemble_listeners(config, self.node, self.metrics, tls,
                                       transport or config.driver, self._files)
        serving = _Serving(listeners)
        ports: list[int] = await self._tasks.start(serving.run, config.host)
        self._serving = serving
        log.info("chatserver listening on %s:%d%s (node %s, database %s, bus %s)",
                 config.host, ports[0], " with TLS" if tls else "", self.node.node_id,
                 redact_password(config.database), redact_password(config.bus))
        web_port = ports[1] if config.ws_port is not None else None
        if web_port is not None:
            log.info("web page at %s://%s:%d/ (WebSocket at /ws)%s", "https" if tls else "http",
                     config.host, web_port, "" if self._files is not None else
                     "; files are off: with a database other than SQLite, --files says where "
                     "they are kept")
        metrics_port = ports[-1] if len(listeners) > 1 + (web_port is not None) else None
        if metrics_port is not None:
            log.info("metrics at http://%s:%d/metrics", config.metrics_host, metrics_port)
        return Listening(config.host, ports[0], web_port, metrics_port, tls is not None)

    async def stop_serving(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop the listeners: stop accepting, let requests in hand finish and be answered,
        log every connected session out (friends are told) and let output drain, all within
        grace_seconds; whatever is still running then is cancelled. 0 stops at once, as does
        cancelling this call. Does nothing when not serving.

        The node itself goes on (in-process clients keep working) until its block ends.
        """
        serving = self._serving
        if serving is None:
            return
        try:
            if grace_seconds > 0:
                deadline = anyio.current_time() + grace_seconds
                for _option, _port, listener in serving.listeners:
                    await listener.shutdown()
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await serving.done.wait()
        finally:
            serving.scope.cancel()
            with anyio.CancelScope(shield=True):
                await serving.done.wait()
            self._serving = None

    async def create_user(self, name: str, password: str | None = None) -> User:
        """Make an account from code, as REG does (without REG's limits per address).

        Without a password the account logs in with a token only (`Config.authenticator`).
        `after_event` hears of it.

        Raises:
            NameTaken: the name is in use.
            InvalidRequest: the name or the password breaks the rules REG has.
        """
        check_name(name)
        stored = TOKEN_ONLY_HASH
        if password is not None:
            check_password(password)
            stored = await self.node.hasher.hash(password)
        node = self.node

        def add(tx: Transaction) -> User:
            user = tx.users.add(name, stored)
            node.record(tx, AccountCreated(user))
            return user

        user = await node.uow.run(add)
        node.tell(AccountCreated(user))
        return user

    async def set_password(self, user_id: int, password: str) -> None:
        """Give the user a new password from code (a token-only account gets one too).
        Sessions already logged in go on.

        Raises:
            UnknownUser: no such user.
            InvalidRequest: the password breaks the rules REG has.
        """
        check_password(password)
        stored = await self.node.hasher.hash(password)
        if not await self.node.uow.run(lambda tx: tx.users.set_password_hash(user_id, stored)):
            raise UnknownUser()

    async def create_group(self, creator_id: int, name: str, description: str = "") -> int:
        """Make a group of creator_id's from code, through CREATE_GROUP's use case (with its
        limits for that user); return its id.

        Raises:
            UnknownUser: no such user.
            InvalidRequest, RateLimited: as CREATE_GROUP.
        """
        result = await (await self._acting(creator_id)).request(CreateGroup(name, description))
        assert isinstance(result, GroupCreated)
        return result.group_id

    async def add_member(self, group_id: int, user_id: int) -> None:
        """Put user_id into the group from code, through JOIN_GROUP's use case: the members
        get a GROUP_EVENT `joined`, as when the user joins.

        Raises:
            UnknownUser, UnknownGroup: no such user or group.
            NotPermitted, RateLimited: as JOIN_GROUP (a full group, too many groups).
        """
        await (await self._acting(user_id)).request(JoinGroup(group_id))

    async def _acting(self, user_id: int) -> "EmbeddedClient":
        """A client acting as user_id without a login: no session is registered, nobody is
        told the user came online, and what is pushed goes to the user's real sessions."""
        node = self.node
        user = await node.uow.run(lambda tx: tx.users.get(user_id))
        if user is None:
            raise UnknownUser()
        client = self.connect()
        client.connection.session = Session(
            user, client.outbox, receipts=False, notices=False,
            unreceipted_limit=node.limits.unreceipted_per_session, device="provisioning",
        )
        return client

    async def _end_sessions(self) -> None:
        """Log every session out, keeping how far each device got (the end of the open_node
        block)."""
        for session in self.node.sessions.all():
            try:
                await end_session(session, node=self.node, reason="server stopping")
            except Exception:
                log.exception("logging out user %d failed", session.user.id)


@define(eq=False)
class EmbeddedClient:
    """One in-process user of the chat: send commands, read the events pushed to it.

    Made by `ChatApp.connect`. It is a connection like a socket's, without the wire: log in
    with `Login` before chatting, and read `next_event()` for what is pushed to it.
    """

    connection: Connection
    outbox: MemoryOutbox

    async def request(self, command: Command) -> Result:
        """Carry out one command and return its result.

        Raises:
            ChatError: the request failed (a subclass says why: `UnknownUser`,
                `NotAMember`, `NameTaken`, ...).
        """
        result = await self.connection.handle(command)
        if type(result) is LoggedIn:
            self.connection.replied()
        await self.outbox.flush()
        return result

    async def next_event(self) -> Event:
        """Wait for the next event pushed to this client and take it."""
        return await self.outbox.next_event()

    async def close(self) -> None:
        """Disconnect: the session, if any, ends as when a socket closes."""
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
        node_id = config.node_id
        if hub is not None and node_id in hub.inboxes:
            # Another node of this hub has the name (two Configs left at the default, the host
            # name and pid): the hub would take one for the other and lose what is sent there.
            node_id = f"{node_id}.{secrets.token_hex(3)}"
        return InProcessCluster(hub or InProcessHub(), node_id)
    if config.bus.startswith("redis://"):
        # A restarted node must not be taken for its former self: its sessions are gone.
        return RedisCluster(
            config.bus,
            f"{config.node_id}.{secrets.token_hex(3)}",
            lease_seconds=config.node_lease_seconds,
        )
    raise ConfigError(f"unsupported bus URL {config.bus!r}: use memory:// or redis://HOST:PORT/DB")


def files_folder(config: Config) -> Path | None:
    """Where files are kept: --files, else a folder beside a SQLite database."""
    if config.files is not None:
        return Path(config.files)
    if config.database.startswith("sqlite:///"):
        database = sqlite_path(config.database)
        return database.with_name(database.stem + "-files")
    return None


def open_files(config: Config, clock: Clock) -> tuple[Any, Any]:
    """The file store and the signer of links, when the web port serves files; else Nones."""
    if config.ws_port is None:
        return None, None
    from chatserver.adapters.web.files import FolderStore, SignedLinks

    store: Any
    if config.files is not None and config.files.startswith("s3://"):
        try:
            from chatserver.adapters.web.s3_store import S3Store
        except ImportError as error:  # boto3 is the s3 extra's
            raise ConfigError(f"--files {redact_password(config.files)} needs the s3 extra: "
                              "pip install 'chatserver[s3]'") from error
        staging = Path(tempfile.gettempdir()) / f"chatserver-uploads-{os.getpid()}"
        try:
            store = S3Store(config.files, staging)
            store.prepare()
        except Exception as error:  # boto3's errors: no credentials, no bucket, no endpoint
            raise ConfigError(f"--files {redact_password(config.files)}: {error}") from error
    elif config.files is not None and "://" in config.files:
        raise ConfigError(f"--files {redact_password(config.files)}: not a folder nor "
                          "s3://BUCKET/PREFIX?endpoint=URL")
    else:
        folder = files_folder(config)
        if folder is None:
            return None, None
        store = FolderStore(folder)
        try:
            store.prepare()
        except OSError as error:
            raise ConfigError(f"--files {folder}: {error.strerror or error}") from error
    key = config.file_key
    if key is None:
        if config.bus != "memory://":
            log.warning("no --file-key: file links signed here are refused by other nodes")
        key = secrets.token_hex(32)
    return store, SignedLinks(key.encode(), clock)


@asynccontextmanager
async def open_node(
    config: Config,
    *,
    hub: InProcessHub | None = None,
    hasher: PasswordHasher | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[ChatApp]:
    """Build a node from config and run its background work on the running event loop.

    Inside the block, `connect()` gives in-process clients and `start_serving()` opens the
    TCP and web listeners. When the block ends, listeners still open are stopped (gracefully,
    as `stop_serving()` does, when the block ends normally; at once when it raises or is
    cancelled), every session is logged out, what the node still holds for other nodes is
    stored, and the database is closed.

    Args:
        config: what to open: the database, the bus, the ports, the limits.
        hub: several nodes given one `InProcessHub` (and `bus="memory://"`) form a cluster
            inside one process.
        hasher: the password hasher (default: scrypt with `Config.hash_cost`).
        clock: the clock (default: the system's).

    Raises:
        ConfigError: the database or the bus cannot be opened or reached.
    """
    check_webhook(config)
    cluster = open_cluster(config, hub)
    uow = await open_database(config.database)
    metrics = PrometheusMetrics() if config.metrics_port is not None else None
    timed_uow = TimedUnitOfWork(uow, metrics) if metrics else uow
    the_clock = clock or SystemClock()
    deliverer: WebhookDeliverer | None = None
    recorder: WebhookRecorder | None = None
    if config.webhook is not None and config.webhook_secret is not None:
        limits = config.webhook_limits
        sender = HttpWebhookSender(config.webhook, config.webhook_secret,
                                   timeout_seconds=limits.timeout_seconds,
                                   connections=limits.concurrency)
        deliverer = WebhookDeliverer(timed_uow, the_clock, sender, cluster.node_id, limits)
        recorder = WebhookRecorder(encode_event, deliverer.wake)
    store, links = open_files(config, the_clock)
    node = Node(
        node_id=cluster.node_id,
        uow=timed_uow,
        hasher=hasher or ScryptHasher(n=config.hash_cost),
        clock=the_clock,
        presence=cluster.presence,
        bus=cluster.bus,
        limits=config.node_limits(),
        metrics=metrics or NoMetrics(),
        authenticator=config.authenticator,
        hooks=config.hooks,
        webhooks=recorder,
        file_links=links,
        handlers=HANDLERS,
    )
    if metrics is not None:
        metrics.count_sessions(lambda: len(node.sessions))
        watch_hooks(metrics, node, deliverer)
        if isinstance(cluster, RedisCluster):
            cluster.observe_calls(metrics.dependency.labels("redis").observe)
    app = ChatApp(node, metrics, config)
    if store is not None and links is not None:
        from chatserver.adapters.web.files import FileTransfers

        app._files = FileTransfers(node, store, links)
    try:
        async with anyio.create_task_group() as background:
            app._tasks = background
            try:
                await background.start(cluster.run, NodeInbox(node), node.sessions.claims)
            except Unavailable as error:
                raise bus_error(config.bus, error.__cause__ or error) from error
            background.start_soon(node.gaps.run)
            if node.events is not None:
                background.start_soon(node.events.run)
            if deliverer is not None:
                background.start_soon(deliverer.run)
            background.start_soon(
                partial(prune_history, node.uow, node.clock, node.limits.history_days,
                        files=store)
            )
            try:
                yield app
                await app.stop_serving()  # cancelled: at once, below
            finally:
                with anyio.CancelScope(shield=True):
                    await app.stop_serving(grace_seconds=0)
                    await app._end_sessions()
                app._tasks = None
                background.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The task group wraps what the caller's block raised: give it back as it was.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.CancelScope(shield=True):
            if deliverer is not None:
                await deliverer.sender.aclose()
            await uow.aclose()


def check_webhook(config: Config) -> None:
    """A webhook needs an http(s) URL and a secret to sign with."""
    if config.webhook is None:
        return
    scheme, _, rest = config.webhook.partition("://")
    if scheme not in ("http", "https") or not rest.split("/")[0]:
        raise ConfigError(f"--webhook must be an http:// or https:// URL with a host, not "
                          f"{config.webhook!r}")
    if not config.webhook_secret:
        raise ConfigError(
            "--webhook needs a secret to sign with: set CHATSERVER_WEBHOOK_SECRET "
            "(or --webhook-secret)"
        )


def watch_hooks(metrics: PrometheusMetrics, node: Node, deliverer: WebhookDeliverer | None) -> None:
    """Export the after_event queue and the webhook outbox, when they are on."""
    events = node.events
    if events is not None:
        metrics.watch_after_event(lambda: float(len(events)), lambda: float(events.dropped),
                                  lambda: float(events.failed))
    if deliverer is not None:
        metrics.watch_webhooks(lambda: float(deliverer.depth), deliverer.oldest_age_seconds,
                               lambda: float(deliverer.delivered),
                               lambda: float(deliverer.failed),
                               lambda: float(deliverer.dead))


# The name open_node had first; tests and older embedders import it.
bootstrap = open_node
