"""The `chatserver` command: serve, client, db upgrade."""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio

from chatserver.adapters.tcp.server import TcpServer
from chatserver.entrypoints.bootstrap import Config, ConfigError, bootstrap, upgrade_database

log = logging.getLogger("chatserver")

SHUTDOWN_GRACE_SECONDS = 10.0


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
                       help="how nodes reach each other: memory:// for a single node "
                       "(CHATSERVER_BUS; default %(default)s)")
    serve.add_argument("--node-id", default=_env("NODE_ID", defaults.node_id),
                       help="this node's name in a cluster (CHATSERVER_NODE_ID; "
                       "default: host name and process id)")
    serve.add_argument("--frame-limit", type=int,
                       default=int(_env("FRAME_LIMIT", str(defaults.frame_limit))),
                       help="largest frame in bytes (CHATSERVER_FRAME_LIMIT; "
                       "default %(default)s)")
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

    db = commands.add_parser("db", help="manage the database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="create or migrate the schema (safe to run again)")
    upgrade.add_argument("--database", default=_env("DATABASE", defaults.database),
                         help="database URL (CHATSERVER_DATABASE; default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "client":
            from chatserver.entrypoints.client.terminal import main as run_client

            return run_client(args.host, args.port)
        if args.command == "db":
            version = upgrade_database(args.database)
            print(f"schema at version {version}")
            return 0
    except ConfigError as error:
        print(f"chatserver: {error}", file=sys.stderr)
        return 2
    return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = Config(
        host=args.host,
        port=args.port,
        database=args.database,
        bus=args.bus,
        node_id=args.node_id,
        frame_limit=args.frame_limit,
    )
    anyio.run(serve, config)
    return 0


async def serve(config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then log every session out and stop."""
    async with bootstrap(config) as app:
        server = TcpServer(app.node, config.host, config.port, config.transport_limits())
        stopped = anyio.Event()

        async def run_server(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            try:
                await server.serve(task_status=task_status)
            finally:
                stopped.set()

        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                port = await tg.start(run_server)
                log.info("chatserver listening on %s:%d (node %s, database %s)",
                         config.host, port, config.node_id, config.database)
                async for signum in signals:
                    log.info("stopping on %s: logging %d sessions out",
                             signal.Signals(signum).name, len(app.node.sessions))
                    break
            await server.shutdown()
            with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS):
                await stopped.wait()
            tg.cancel_scope.cancel()
    log.info("chatserver stopped")
