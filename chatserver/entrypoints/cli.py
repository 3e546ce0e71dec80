"""The `chatserver` command: serve, client, db upgrade."""

import argparse
import contextlib
import ctypes
import importlib.metadata
import logging
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio

from chatserver.entrypoints import collector, options
from chatserver.entrypoints.bootstrap import (
    SHUTDOWN_GRACE_SECONDS,
    Config,
    ConfigError,
    check_bus,
    check_names,
    listen_error,
    open_node,
    tls_context,
    upgrade_database,
)
from chatserver.entrypoints.log_lines import SecondsCachedFormatter, TurnBatchedHandler
from chatserver.entrypoints.options import check_port

log = logging.getLogger("chatserver")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatserver",
        description="A QQ-style instant-messaging server (docs/protocol.md over TCP).",
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('chatserver')}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a chat server node",
        description="Run a chat server node. Every option can also be set by the environment "
        "variable named in its help; the option wins. SIGINT/SIGTERM stop it cleanly.",
    )
    options.add_all(serve)
    _add_client(commands)
    _add_cluster(commands)
    _add_db(commands)
    from chatserver.entrypoints import admin

    admin.add_parser(commands)
    _name_subcommands(parser)
    return parser


def _name_subcommands(parser: argparse.ArgumentParser) -> None:
    """A missing subcommand is named by its choices ("required: {serve,client,...}"), not by
    the attribute it is kept in ("required: db_command")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.metavar = "{" + ",".join(action.choices) + "}"
            for sub in action.choices.values():
                _name_subcommands(sub)


def _device_name(text: str) -> str:
    """--device: 1 to 64 characters, as LOGIN's `device` (PROTOCOL.md)."""
    if not 1 <= len(text) <= 64:
        raise argparse.ArgumentTypeError(f"a device name has 1 to 64 characters, not {len(text)}")
    return text


def _add_client(commands: Any) -> None:
    client = commands.add_parser(
        "client", help="the interactive terminal client",
        description="Chat from a terminal: log in or register, then type `help`.",
    )
    options.add(client, "--host", help="server address")
    options.add(client, "--port", help="server port")
    client.add_argument("--device", default=None, type=_device_name,
                        help="the name this terminal logs in with, 1-64 characters: a login on "
                        "the same device takes over its session, other devices stay logged in "
                        "(default: this machine's host name)")
    options.add(client, "--ws-port", name="--web-port",
                help="the server's web port (its --ws-port), where sendfile: and download: "
                "move files (files are off without it)")
    options.add(client, "--tls")
    options.add(client, "--tls-ca")


def _client_tls(tls: bool, ca: str | None) -> ssl.SSLContext | None:
    """The terminal client's TLS context: --tls trusts the system's store, --tls-ca FILE only
    FILE; a FILE that cannot be read or holds no certificate is one line."""
    if not tls and not ca:
        return None
    if not ca:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca)
    except ssl.SSLError as error:  # before OSError, which it is
        raise ConfigError(f"--tls-ca {ca} holds no PEM certificate ({error.reason})") from error
    except OSError as error:
        raise ConfigError(f"--tls-ca {ca}: {error.strerror or error}") from error


def _add_cluster(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster", help="run N nodes with nginx in front, on this machine",
        description="Start N `serve` nodes sharing one database and one Redis bus, and nginx "
        "(stream module) balancing TCP clients over them on one port. For demos and tests; "
        "Ctrl+C stops everything cleanly. Needs nginx: "
        "apt-get install -y nginx-light libnginx-mod-stream.",
    )
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    options.add(cluster, "--host", help="address nginx listens on for clients (the nodes "
                "listen on 127.0.0.1 whatever it is: only nginx reaches them)")
    cluster.add_argument("--port", type=int, default=8000,
                         help="the port clients connect to (default %(default)s)")
    cluster.add_argument("--node-port", type=int, default=0,
                         help="first node's port; the others follow (default: --port + 1)")
    options.add(cluster, "--database", help="shared database: "
                "mysql://USER:PASSWORD@HOST:PORT/DB or sqlite:///FILE")
    options.add(cluster, "--bus", help="shared Redis: redis://HOST:PORT/DB[?namespace=NAME]",
                default="redis://127.0.0.1:6379/0")
    cluster.add_argument("--ws-port", type=int, default=0,
                         help="also the web page and WebSocket (/ws) through nginx on this port; "
                         "each node serves its own right after the nodes' TCP ports "
                         "(default: off)")
    options.add(cluster, "--files", help="with --ws-port: the folder where the nodes keep "
                "files shared in chats, one for all of them (or s3://BUCKET/PREFIX)",
                default_text="a folder NAME-files beside a SQLite database NAME.db, else "
                "chatserver-files in the current folder")


def _add_db(commands: Any) -> None:
    db = commands.add_parser("db", help="manage the database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="create or migrate the schema (safe to run again)")
    options.add(upgrade, "--database", help="database URL")
    names = db_commands.add_parser(
        "check-names", help="list the user and group names that break today's rules for names",
        description="Names registered before the rules (NFKC form, no control or format "
        "characters, no spaces at either end, something visible, no mixed-script look-alikes, "
        "unique ignoring case) keep working; this lists them, a line each, with the rules "
        "they break. Exit code 1 when there are any.")
    options.add(names, "--database", help="database URL")
    import_legacy = db_commands.add_parser(
        "import-legacy", help="copy a database of the original C++ server into an empty one",
        description="Copy users (with their ids and old passwords, now hashed), friendships, "
        "groups and waiting offline messages from the original server's MySQL database into "
        "an empty chatserver database, in one transaction.")
    import_legacy.add_argument("--from", dest="source", required=True,
                               help="the original database, mysql://USER:PASSWORD@HOST:PORT/chat")
    options.add(import_legacy, "--database",
                help="the empty database to fill, mysql://... or sqlite:///FILE")
    import_legacy.add_argument("--legacy-charset", choices=("gbk", "utf8"), default="gbk",
                               help="how the original server spoke to its database: gbk (its "
                               "`set names gbk`: text is read back the same way, as the "
                               "original did) or utf8 (a server changed to `set names utf8`) "
                               "(default %(default)s)")


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            return _serve(args)
        if args.command == "cluster":
            return _cluster(args)
        if args.command == "admin":
            from chatserver.entrypoints import admin

            return admin.run(args)
        if args.command == "client":
            from chatserver.entrypoints.client.terminal import main as run_client

            # --port 70000 was an OverflowError traceback from connect().
            check_port("--port", args.port)
            check_port("--web-port", args.web_port)
            tls = _client_tls(args.tls, args.tls_ca)
            return run_client(args.host, args.port, args.device, args.web_port, tls)
        if args.command == "db" and args.database == "memory://":
            # It printed "schema at version 0" (upgrade) or imported into a database that
            # vanished at exit (import-legacy).
            raise ConfigError(f"db {args.db_command} --database memory://: a memory database "
                              "is gone when the command ends; give sqlite:///FILE or "
                              "mysql://USER:PASSWORD@HOST:PORT/DB")
        if args.command == "db" and args.db_command == "import-legacy":
            from chatserver.adapters.mysql.legacy_import import LegacyImportError, import_legacy

            try:
                print(import_legacy(args.source, args.database, args.legacy_charset).summary())
            except LegacyImportError as error:
                print(f"chatserver: import failed: {error}", file=sys.stderr)
                return 1
            return 0
        if args.command == "db" and args.db_command == "check-names":
            upgrade_database(args.database)
            lines = anyio.run(check_names, args.database)
            for line in lines:
                print(line)
            print(f"{len(lines)} names break today's rules (they keep working)")
            return 1 if lines else 0
        if args.command == "db":
            _log_to_stderr("INFO")  # says so when it creates the database
            version = upgrade_database(args.database)
            print(f"schema at version {version}")
            _report_names(args.database)
            return 0
    except ConfigError as error:
        acting = args is not None and args.command == "admin"
        command = "chatserver admin" if acting else "chatserver"
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # A start-up mistake found inside the server's task groups (a port in use).
        mistake = _only_config_error(group)
        if mistake is None:
            raise
        print(f"chatserver: {mistake}", file=sys.stderr)
        return 2
    return 2


def _report_names(url: str, shown: int = 20) -> None:
    """After an upgrade: the names that break today's rules, the first few of them."""
    lines = anyio.run(check_names, url)
    for line in lines[:shown]:
        print(line)
    if lines:
        more = f" ({len(lines) - shown} more)" if len(lines) > shown else ""
        print(
            f"{len(lines)} names break today's rules and keep working{more}: "
            "`chatserver db check-names` lists them all"
        )


def _only_config_error(group: BaseExceptionGroup[BaseException]) -> ConfigError | None:
    """The ConfigError a group holds, when it holds nothing else."""
    found, rest = group.split(ConfigError)
    if found is None or rest is not None:
        return None
    error: BaseException = found
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error if isinstance(error, ConfigError) else None


def _cluster(args: argparse.Namespace) -> int:
    from chatserver.entrypoints.local_cluster import LocalCluster

    if args.nodes < 1:
        raise ConfigError(f"--nodes {args.nodes}: a cluster needs at least 1 node")
    check_port("--port", args.port)
    check_port("--node-port", args.node_port, zero="the ports right after --port")
    check_port("--ws-port", args.ws_port, zero="off")
    cluster = LocalCluster(
        nodes=args.nodes, port=args.port, database=args.database, bus=args.bus,
        host=args.host, first_node_port=args.node_port, ws_port=args.ws_port,
        files=args.files,
    )
    cluster.check()
    node_ports = cluster.node_ports() + cluster.node_web_ports()
    if max(node_ports) > 65535:
        raise ConfigError(f"the nodes' ports {min(node_ports)}-{max(node_ports)} go past 65535: "
                          "choose a lower --port or --node-port")
    # Each mistake once, here, rather than once per node and then a wait for nothing: the
    # nodes inherit the environment, so a CHATSERVER_... variable that `serve` would refuse
    # is refused here.
    node_argv = ["serve", *cluster.node_command(1, cluster.node_ports()[0])[4:]]
    options.config_from(build_parser().parse_args(node_argv))
    check_free(args.host, [("--port", args.port), ("--ws-port", args.ws_port)]
               + [("a node's port", port) for port in cluster.node_ports()]
               + [("a node's web port", port) for port in cluster.node_web_ports()])
    _log_to_stderr("INFO")
    upgrade_database(args.database)  # once, creating the database as `db upgrade` does
    anyio.run(check_bus, args.bus)
    return cluster.run()


def check_free(host: str, ports: list[tuple[str, int]]) -> None:
    """Each port can be listened on now (as the servers will: SO_REUSEADDR)."""
    for option, port in ports:
        if not port:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise listen_error(option, host, port, error) from None


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
    several nodes can be read together. Other libraries' lines show from WARNING up, unless
    the level is DEBUG: their INFO lines (mysql.connector's "plugin_name: ...") are noise."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigError(f"--log-level {level!r} is not a level: use DEBUG, INFO, WARNING "
                          "or ERROR")
    node = f"[{node_id}] " if node_id else ""
    # Lines are written once per event-loop turn, not one write() each (log_lines).
    lines = TurnBatchedHandler(sys.stderr)
    lines.setFormatter(SecondsCachedFormatter(
        f"%(asctime)s %(levelname)s {node.replace('%', '%%')}%(name)s: %(message)s"
    ))
    logging.basicConfig(level=number, handlers=[lines])
    # The format above names no thread, process or source line: a record need not look them
    # up (the logging module's own advice; two lines per login, ~3 µs each).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    others = number if number <= logging.DEBUG else max(number, logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(partial(_ours_or_at_least, others))


def _ours_or_at_least(level: int, record: logging.LogRecord) -> bool:
    """chatserver's own lines, and other libraries' from level up."""
    ours = record.name == "chatserver" or record.name.startswith("chatserver.")
    return ours or record.levelno >= level


def _serve(args: argparse.Namespace) -> int:
    config = options.config_from(args)
    _log_to_stderr(config.log_level, config.node_id if config.bus != "memory://" else None)
    _raise_file_limit()
    _return_freed_memory()
    anyio.run(serve, config, **_event_loop(config.event_loop))
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


async def serve(config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then log every session out and stop.

    A second signal, or the grace period running out, stops at once.
    """
    tls_context(config.tls_cert, config.tls_key)  # a bad file is said before anything opens
    # Signals are ours from start to end, so a late second one cannot kill us mid-cleanup.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(config) as app:
            await app.start_serving(config.driver)

            async def stop_gracefully(cancel_scope: anyio.CancelScope) -> None:
                # One grace for all: requests in hand, logging out, output draining.
                await app.stop_serving(SHUTDOWN_GRACE_SECONDS)
                cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(collector.keep_long_lived_frozen,
                                      freeze=config.gc == "freeze"))
                async for signum in signals:
                    online = len(app.node.sessions)
                    log.info("stopping on %s: logging out %d session%s",
                             signal.Signals(signum).name, online, "" if online == 1 else "s")
                    tg.start_soon(stop_gracefully, tg.cancel_scope)
                    break
                async for signum in signals:
                    # Cancelling stop_serving() cancels the listeners at once.
                    log.warning("second %s: stopping at once", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    break
    log.info("chatserver stopped")
