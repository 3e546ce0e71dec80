"""The `chatserver` command: serve, client, db upgrade."""

import argparse
import contextlib
import ctypes
import logging
import os
import resource
import signal
import ssl
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import anyio

from chatserver.adapters.mysql.url import redact_password
from chatserver.adapters.tcp.budget import ConnectionsPerAddress
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.tcp.server import TcpServer
from chatserver.application.node import Limits
from chatserver.entrypoints import collector
from chatserver.entrypoints.bootstrap import Config, ConfigError, bootstrap, upgrade_database

log = logging.getLogger("chatserver")

SHUTDOWN_GRACE_SECONDS = 10.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CHATSERVER_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="chatserver",
        description="A QQ-style instant-messaging server (PROTOCOL.md over TCP).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a chat server node",
        description="Run a chat server node. Every option can also be set by the environment "
        "variable named in its help; the option wins. SIGINT/SIGTERM stop it cleanly.",
    )
    serve.add_argument("--host", default=_env("HOST", defaults.host),
                       help="address to listen on (CHATSERVER_HOST; default %(default)s)")
    serve.add_argument("--port", type=int, default=int(_env("PORT", str(defaults.port))),
                       help="TCP port, 0 for any free one (CHATSERVER_PORT; default %(default)s)")
    serve.add_argument("--database", default=_env("DATABASE", defaults.database),
                       help="sqlite:///relative.db, sqlite:////absolute.db or memory:// "
                       "(CHATSERVER_DATABASE; default %(default)s)")
    serve.add_argument("--bus", default=_env("BUS", defaults.bus),
                       help="how nodes reach each other: memory:// for a single node, "
                       "redis://HOST:PORT/DB[?namespace=NAME] for a cluster "
                       "(CHATSERVER_BUS; default %(default)s)")
    serve.add_argument("--node-id", default=_env("NODE_ID", defaults.node_id),
                       help="this node's name in a cluster (CHATSERVER_NODE_ID; "
                       "default: host name and process id)")
    serve.add_argument("--node-lease", type=float,
                       default=float(_env("NODE_LEASE", str(defaults.node_lease_seconds))),
                       help="seconds a node that stopped renewing its Redis lease (crashed) "
                       "still counts as alive; its users count as offline after that "
                       "(CHATSERVER_NODE_LEASE; default %(default)s)")
    serve.add_argument("--behind-proxy", action="store_true",
                       default=_env("BEHIND_PROXY", "") not in ("", "0"),
                       help="clients reach this node through nginx: turn off the limits per "
                       "client address (connections, failed logins), which would see only "
                       "nginx's address (CHATSERVER_BEHIND_PROXY=1)")
    serve.add_argument("--proxy-protocol", action="store_true",
                       default=_env("PROXY_PROTOCOL", "") not in ("", "0"),
                       help="every connection begins with a PROXY protocol header (v1 or v2, "
                       "nginx: proxy_protocol on;) naming the real client, whose address the "
                       "limits per address then use; a connection without one is closed "
                       "(CHATSERVER_PROXY_PROTOCOL=1)")
    serve.add_argument("--connections-per-address", type=int,
                       default=int(_env("CONNECTIONS_PER_ADDRESS",
                                        str(defaults.transport.connections_per_address))),
                       help="open connections allowed from one address, 0 for no limit "
                       "(CHATSERVER_CONNECTIONS_PER_ADDRESS; default %(default)s)")
    serve.add_argument("--idle-timeout", type=float,
                       default=float(_env("IDLE_TIMEOUT",
                                          str(defaults.transport.idle_timeout_seconds))),
                       help="seconds a logged-in client may stay silent (clients PING) before "
                       "it is disconnected (CHATSERVER_IDLE_TIMEOUT; default %(default)s)")
    serve.add_argument("--tls-cert", default=_env("TLS_CERT", "") or None,
                       help="PEM certificate (chain): serve TLS instead of plain TCP "
                       "(CHATSERVER_TLS_CERT; needs --tls-key)")
    serve.add_argument("--tls-key", default=_env("TLS_KEY", "") or None,
                       help="PEM private key for --tls-cert (CHATSERVER_TLS_KEY)")
    serve.add_argument("--request-burst", type=int,
                       default=int(_env("REQUEST_BURST", str(defaults.transport.request_burst))),
                       help="requests a connection may make at once (CHATSERVER_REQUEST_BURST; "
                       "default %(default)s; the protocol promises at least 100)")
    serve.add_argument("--request-rate", type=float,
                       default=float(_env("REQUEST_RATE",
                                          str(defaults.transport.requests_per_second))),
                       help="requests per second a connection may keep up (CHATSERVER_REQUEST_"
                       "RATE; default %(default)s; the protocol promises at least 50)")
    serve.add_argument("--stored-limit", type=int,
                       default=int(_env("STORED_LIMIT", str(defaults.limits.stored_per_user))),
                       help="messages a login pushes at most to a device that fell behind "
                       "(the newest of what waits for it; the rest stays readable with SYNC) "
                       "(CHATSERVER_STORED_LIMIT; default %(default)s)")
    serve.add_argument("--history-days", type=int,
                       default=int(_env("HISTORY_DAYS", str(defaults.limits.history_days))),
                       help="days messages are kept in users' inboxes, for SYNC and HISTORY; "
                       "0: only until every device of the user has had them, as in version 1 "
                       "(CHATSERVER_HISTORY_DAYS; default %(default)s)")
    serve.add_argument("--devices-per-user", type=int,
                       default=int(_env("DEVICES_PER_USER",
                                        str(defaults.limits.devices_per_user))),
                       help="devices a user may be logged in on at once; a login on one more "
                       "ends the session logged in longest ago (CHATSERVER_DEVICES_PER_USER; "
                       "default %(default)s)")
    serve.add_argument("--hash-cost", type=int,
                       default=int(_env("HASH_COST", str(defaults.hash_cost))),
                       help="scrypt's n for new password hashes, a power of 2 "
                       "(CHATSERVER_HASH_COST; default %(default)s: 16 MiB, ~85 ms)")
    serve.add_argument("--metrics-port", type=int,
                       default=int(_env("METRICS_PORT", "0")) or None,
                       help="serve Prometheus metrics at http://HOST:PORT/metrics "
                       "(CHATSERVER_METRICS_PORT; default: off)")
    serve.add_argument("--ws-port", type=int,
                       default=int(_env("WS_PORT", "0")) or None,
                       help="also serve the web page at http://HOST:PORT/ and the protocol over "
                            "WebSocket at /ws on this port (default: off; env CHATSERVER_WS_PORT)")
    serve.add_argument("--frame-limit", type=int,
                       default=int(_env("FRAME_LIMIT", str(defaults.frame_limit))),
                       help="largest frame in bytes (CHATSERVER_FRAME_LIMIT; "
                       "default %(default)s)")
    serve.add_argument("--transport", choices=("anyio", "asyncio"),
                       default=_env("TRANSPORT", "asyncio"),
                       help="asyncio Protocols, or anyio streams (CHATSERVER_TRANSPORT; "
                       "default %(default)s: less CPU per message and memory per connection)")
    serve.add_argument("--loop", choices=("asyncio", "uvloop"),
                       default=_env("LOOP", "asyncio"),
                       help="event loop: the standard library's, or uvloop if installed "
                       "(pip install uvloop) (CHATSERVER_LOOP; default %(default)s)")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"),
                       help="DEBUG, INFO, WARNING or ERROR (CHATSERVER_LOG_LEVEL; "
                       "default %(default)s)")

    client = commands.add_parser(
        "client", help="the interactive terminal client",
        description="Chat from a terminal: log in or register, then type `help`.",
    )
    client.add_argument("--host", default=_env("HOST", defaults.host),
                        help="server address (default %(default)s)")
    client.add_argument("--port", type=int, default=int(_env("PORT", str(defaults.port))),
                        help="server port (default %(default)s)")
    client.add_argument("--device", default=None,
                        help="the name this terminal logs in with, 1-64 characters: a login on "
                        "the same device takes over its session, other devices stay logged in "
                        "(default: this machine's host name)")

    cluster = commands.add_parser(
        "cluster", help="run N nodes with nginx in front, on this machine",
        description="Start N `serve` nodes sharing one database and one Redis bus, and nginx "
        "(stream module) balancing TCP clients over them on one port. For demos and tests; "
        "Ctrl+C stops everything cleanly. Needs nginx: "
        "apt-get install -y nginx-light libnginx-mod-stream.",
    )
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    cluster.add_argument("--host", default=_env("HOST", defaults.host),
                         help="address for nginx and the nodes (default %(default)s)")
    cluster.add_argument("--port", type=int, default=8000,
                         help="the port clients connect to (default %(default)s)")
    cluster.add_argument("--node-port", type=int, default=0,
                         help="first node's port; the others follow (default: --port + 1)")
    cluster.add_argument("--database", default=_env("DATABASE", "sqlite:///chatserver.db"),
                         help="shared database: mysql://USER:PASSWORD@HOST:PORT/DB or "
                         "sqlite:///FILE (default %(default)s)")
    cluster.add_argument("--bus", default=_env("BUS", "redis://127.0.0.1:6379/0"),
                         help="shared Redis: redis://HOST:PORT/DB[?namespace=NAME] "
                         "(default %(default)s)")
    cluster.add_argument("--ws-port", type=int, default=0,
                         help="also the web page and WebSocket (/ws) through nginx on this port; "
                         "each node serves its own right after the nodes' TCP ports "
                         "(default: off)")

    db = commands.add_parser("db", help="manage the database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="create or migrate the schema (safe to run again)")
    upgrade.add_argument("--database", default=_env("DATABASE", defaults.database),
                         help="database URL (CHATSERVER_DATABASE; default %(default)s)")
    import_legacy = db_commands.add_parser(
        "import-legacy", help="copy a database of the original C++ server into an empty one",
        description="Copy users (with their ids and old passwords, now hashed), friendships, "
        "groups and waiting offline messages from the original server's MySQL database into "
        "an empty chatserver database, in one transaction.")
    import_legacy.add_argument("--from", dest="source", required=True,
                               help="the original database, mysql://USER:PASSWORD@HOST:PORT/chat")
    import_legacy.add_argument("--database", default=_env("DATABASE", defaults.database),
                               help="the empty database to fill, mysql://... or sqlite:///FILE "
                               "(CHATSERVER_DATABASE; default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "cluster":
            return _cluster(args)
        if args.command == "client":
            from chatserver.entrypoints.client.terminal import main as run_client

            return run_client(args.host, args.port, args.device)
        if args.command == "db" and args.db_command == "import-legacy":
            from chatserver.adapters.mysql.legacy_import import LegacyImportError, import_legacy

            try:
                print(import_legacy(args.source, args.database).summary())
            except LegacyImportError as error:
                print(f"chatserver: import failed: {error}", file=sys.stderr)
                return 1
            return 0
        if args.command == "db":
            version = upgrade_database(args.database)
            print(f"schema at version {version}")
            return 0
    except ConfigError as error:
        print(f"chatserver: {error}", file=sys.stderr)
        return 2
    return 2


def _cluster(args: argparse.Namespace) -> int:
    from chatserver.entrypoints.local_cluster import LocalCluster

    _log_to_stderr("INFO")
    return LocalCluster(
        nodes=args.nodes, port=args.port, database=args.database, bus=args.bus,
        host=args.host, first_node_port=args.node_port, ws_port=args.ws_port,
    ).run()


def _return_freed_memory() -> None:
    """Each scrypt hash takes 16 MiB in a worker thread; glibc would then raise its mmap
    threshold to match and keep such blocks in its arenas, so RSS creeps up with every login.
    A fixed threshold keeps big blocks mmapped and handed back when freed."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _raise_file_limit() -> None:
    """Every client is a file descriptor: allow as many as the system lets this process have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _log_to_stderr(level: str, node_id: str | None = None) -> None:
    """Log lines to stderr; a node of a cluster names itself in each, so that the logs of
    several nodes can be read together."""
    node = f"[{node_id}] " if node_id else ""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {node.replace('%', '%%')}%(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    _log_to_stderr(args.log_level, args.node_id if args.bus != "memory://" else None)
    _raise_file_limit()
    _return_freed_memory()
    config = Config(
        host=args.host,
        port=args.port,
        database=args.database,
        bus=args.bus,
        node_id=args.node_id,
        frame_limit=args.frame_limit,
        node_lease_seconds=args.node_lease,
        behind_proxy=args.behind_proxy,
        proxy_protocol=args.proxy_protocol,
        tls_cert=args.tls_cert,
        metrics_port=args.metrics_port,
        ws_port=args.ws_port,
        tls_key=args.tls_key,
        hash_cost=args.hash_cost,
        limits=Limits(
            stored_per_user=args.stored_limit,
            history_days=args.history_days,
            devices_per_user=args.devices_per_user,
        ),
        transport=TransportLimits(
            connections_per_address=args.connections_per_address,
            idle_timeout_seconds=args.idle_timeout,
            request_burst=args.request_burst,
            requests_per_second=args.request_rate,
            request_grace_seconds=SHUTDOWN_GRACE_SECONDS / 2,
        ),
    )
    anyio.run(serve, config, args.transport, **_event_loop(args.loop))
    return 0


def _event_loop(name: str) -> dict[str, Any]:
    """anyio.run's arguments for the --loop chosen."""
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError("--loop uvloop needs uvloop: pip install uvloop") from None
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    return {"backend": "asyncio"}


class Server(Protocol):
    """What serve() needs of a listener: TcpServer, ProtocolServer, WebSocketServer."""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = ...) -> None: ...

    async def shutdown(self) -> None: ...


async def serve(config: Config, transport: str = "asyncio") -> None:
    """Serve until SIGINT or SIGTERM, then log every session out and stop.

    A second signal, or the grace period running out, stops at once.
    """
    tls = tls_context(config.tls_cert, config.tls_key)
    # Signals are ours from start to end, so a late second one cannot kill us mid-cleanup.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with bootstrap(config) as app:
            server_class = TcpServer
            if transport == "asyncio":
                from chatserver.adapters.tcp.protocol_transport import ProtocolServer

                server_class = ProtocolServer  # type: ignore[assignment]
            limits = config.transport_limits()
            # One count of connections per client address, over TCP and WebSocket together.
            per_address = ConnectionsPerAddress(limits.connections_per_address)
            server = server_class(
                app.node,
                config.host,
                config.port,
                limits,
                tls=tls,
                metrics=app.metrics,
                per_address=per_address,
            )
            servers: list[Server] = [server]
            if config.ws_port is not None:
                from chatserver.adapters.web.server import WebSocketServer

                servers.append(WebSocketServer(
                    app.node,
                    config.host,
                    config.ws_port,
                    limits,
                    tls=tls,
                    metrics=app.metrics,
                    per_address=per_address,
                    forwarded_for=config.behind_proxy or config.proxy_protocol,
                ))
            if app.metrics is not None and config.metrics_port is not None:
                app.metrics.serve(config.host, config.metrics_port)
                log.info("metrics at http://%s:%d/metrics", config.host, config.metrics_port)
            stopped = [anyio.Event() for _ in servers]

            async def run_server(
                index: int, *, task_status: anyio.abc.TaskStatus[int]
            ) -> None:
                try:
                    await servers[index].serve(task_status=task_status)
                finally:
                    stopped[index].set()

            async def stop_gracefully(cancel_scope: anyio.CancelScope) -> None:
                # One grace for all: requests in hand, logging out, output draining.
                deadline = anyio.current_time() + SHUTDOWN_GRACE_SECONDS
                for each in servers:
                    await each.shutdown()
                with anyio.move_on_after(deadline - anyio.current_time()):
                    for event in stopped:
                        await event.wait()
                cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                port = await tg.start(run_server, 0)
                log.info("chatserver listening on %s:%d%s (node %s, database %s, bus %s)",
                         config.host, port, " with TLS" if tls else "", app.node.node_id,
                         redact_password(config.database), redact_password(config.bus))
                if len(servers) > 1:
                    web_port = await tg.start(run_server, 1)
                    scheme = "https" if tls else "http"
                    log.info("web page at %s://%s:%d/ (WebSocket at /ws)", scheme, config.host,
                             web_port)
                tg.start_soon(partial(collector.keep_long_lived_frozen,
                                      freeze=collector.enabled()))
                async for signum in signals:
                    log.info("stopping on %s: logging %d sessions out",
                             signal.Signals(signum).name, len(app.node.sessions))
                    tg.start_soon(stop_gracefully, tg.cancel_scope)
                    break
                async for signum in signals:
                    log.warning("second %s: stopping at once", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    break
    log.info("chatserver stopped")


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
        raise ConfigError(f"cannot load the TLS certificate or key: {error}") from error
    return context
