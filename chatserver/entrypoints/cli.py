"""The `chatserver` command: serve, client, db upgrade."""

import argparse
import contextlib
import ctypes
import importlib.metadata
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import anyio

from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.application.node import Limits
from chatserver.entrypoints import collector
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

log = logging.getLogger("chatserver")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CHATSERVER_{name}", default)


def _env_int(name: str, default: str) -> int:
    return int(_env_number(name, default, int))


def _env_float(name: str, default: str) -> float:
    return _env_number(name, default, float)


def _env_number(name: str, default: str, kind: type[int] | type[float]) -> float:
    value = _env(name, default)
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(
            f"CHATSERVER_{name}={value!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
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
    serve.add_argument("--host", default=_env("HOST", defaults.host),
                       help="address to listen on (CHATSERVER_HOST; default %(default)s)")
    serve.add_argument("--port", type=int, default=_env_int("PORT", str(defaults.port)),
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
                       default=_env_float("NODE_LEASE", str(defaults.node_lease_seconds)),
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
    serve.add_argument("--trusted-proxy", action="append", metavar="CIDR", default=None,
                       help="with --proxy-protocol or --behind-proxy: a proxy (address or CIDR "
                       "block, repeatable) whose PROXY header, or X-Forwarded-For on --ws-port, "
                       "names the client; from any other peer they are refused and logged "
                       "(CHATSERVER_TRUSTED_PROXIES, comma-separated; default: loopback only, "
                       "127.0.0.0/8 and ::1)")
    serve.add_argument("--connections-per-address", type=int,
                       default=_env_int("CONNECTIONS_PER_ADDRESS",
                                        str(defaults.transport.connections_per_address)),
                       help="open connections allowed from one address, 0 for no limit "
                       "(CHATSERVER_CONNECTIONS_PER_ADDRESS; default %(default)s)")
    serve.add_argument("--idle-timeout", type=float,
                       default=_env_float("IDLE_TIMEOUT",
                                          str(defaults.transport.idle_timeout_seconds)),
                       help="seconds a logged-in client may stay silent (clients PING) before "
                       "it is disconnected (CHATSERVER_IDLE_TIMEOUT; default %(default)s)")
    serve.add_argument("--login-timeout", type=float,
                       default=float(_env("LOGIN_TIMEOUT",
                                          str(defaults.transport.login_timeout_seconds))),
                       help="seconds a client that has spoken may stay silent before logging "
                       "in; not for clients of the original server, nor for connections that "
                       "have sent nothing (CHATSERVER_LOGIN_TIMEOUT; default %(default)s)")
    serve.add_argument("--tls-cert", default=_env("TLS_CERT", "") or None,
                       help="PEM certificate (chain): serve TLS instead of plain TCP "
                       "(CHATSERVER_TLS_CERT; needs --tls-key)")
    serve.add_argument("--tls-key", default=_env("TLS_KEY", "") or None,
                       help="PEM private key for --tls-cert (CHATSERVER_TLS_KEY)")
    serve.add_argument("--request-burst", type=int,
                       default=_env_int("REQUEST_BURST", str(defaults.transport.request_burst)),
                       help="requests a connection may make at once (CHATSERVER_REQUEST_BURST; "
                       "default %(default)s; the protocol promises at least 100)")
    serve.add_argument("--request-rate", type=float,
                       default=_env_float("REQUEST_RATE",
                                          str(defaults.transport.requests_per_second)),
                       help="requests per second a connection may keep up (CHATSERVER_REQUEST_"
                       "RATE; default %(default)s; the protocol promises at least 50)")
    serve.add_argument("--stored-limit", type=int,
                       default=_env_int("STORED_LIMIT", str(defaults.limits.stored_per_user)),
                       help="messages a login pushes at most to a device that fell behind "
                       "(the newest of what waits for it; the rest stays readable with SYNC) "
                       "(CHATSERVER_STORED_LIMIT; default %(default)s)")
    serve.add_argument("--history-days", type=int,
                       default=_env_int("HISTORY_DAYS", str(defaults.limits.history_days)),
                       help="days messages are kept in users' inboxes, for SYNC and HISTORY; "
                       "0: only until every device of the user has had them, as in version 1 "
                       "(CHATSERVER_HISTORY_DAYS; default %(default)s)")
    serve.add_argument("--devices-per-user", type=int,
                       default=_env_int("DEVICES_PER_USER",
                                        str(defaults.limits.devices_per_user)),
                       help="devices a user may be logged in on at once; a login on one more "
                       "ends the session logged in longest ago (CHATSERVER_DEVICES_PER_USER; "
                       "default %(default)s)")
    serve.add_argument("--group-member-limit", type=int,
                       default=_env_int("GROUP_MEMBER_LIMIT",
                                        str(defaults.limits.group_members)),
                       help="members one group may have; past it ADD_GROUP is errno 12; 0: no "
                       "limit (CHATSERVER_GROUP_MEMBER_LIMIT; default %(default)s)")
    serve.add_argument("--stranger-messages-per-minute", type=int,
                       default=_env_int("STRANGER_MESSAGES_PER_MINUTE",
                                        str(defaults.limits.stranger_messages_per_minute)),
                       help="messages strangers (not friends, no group in common) may send, "
                       "all together, to one user who is not online on the node, per minute "
                       f"after a burst of {defaults.limits.stranger_messages_burst}; errno 9 "
                       "past it; 0: no limit (CHATSERVER_STRANGER_MESSAGES_PER_MINUTE; default "
                       "%(default)s)")
    serve.add_argument("--stranger-share", type=int,
                       default=_env_int("STRANGER_SHARE",
                                        str(defaults.limits.stranger_stored_share)),
                       help="strangers' messages are refused (errno 14) while this many wait "
                       "for the recipient that none of their devices has had; friends' never "
                       "are; 0: no share (CHATSERVER_STRANGER_SHARE; default %(default)s)")
    serve.add_argument("--group-entries-per-second", type=int,
                       default=_env_int("GROUP_ENTRIES_PER_SECOND",
                                        str(defaults.limits.group_entries_per_second)),
                       help="inbox entries (one per member) one group's messages may write at "
                       "once and then per second; GROUP_CHAT is errno 9 past it; 0: no limit "
                       "(CHATSERVER_GROUP_ENTRIES_PER_SECOND; default %(default)s)")
    serve.add_argument("--registrations-per-minute", type=int,
                       default=_env_int("REGISTRATIONS_PER_MINUTE",
                                        str(defaults.limits.registrations_per_minute)),
                       help="accounts one client address may create within a minute, and "
                       "a sixth of the REG requests it may make (whatever their outcome), 0 for "
                       "no limit; past it REG gets errno 9 (CHATSERVER_REGISTRATIONS_PER_MINUTE; "
                       "default %(default)s)")
    serve.add_argument("--registrations-per-hour", type=int,
                       default=_env_int("REGISTRATIONS_PER_HOUR",
                                        str(defaults.limits.registrations_per_hour)),
                       help="accounts one client address may create within an hour, 0 for no "
                       "limit; past it REG gets errno 9 (CHATSERVER_REGISTRATIONS_PER_HOUR; "
                       "default %(default)s)")
    serve.add_argument("--hash-cost", type=int,
                       default=_env_int("HASH_COST", str(defaults.hash_cost)),
                       help="scrypt's n for new password hashes, a power of 2 "
                       "(CHATSERVER_HASH_COST; default %(default)s: 16 MiB, ~85 ms)")
    serve.add_argument("--metrics-port", type=int,
                       default=_env_int("METRICS_PORT", "0") or None,
                       help="serve Prometheus metrics at http://HOST:PORT/metrics "
                       "(CHATSERVER_METRICS_PORT; default: off)")
    serve.add_argument("--metrics-host", default=_env("METRICS_HOST", defaults.metrics_host),
                       help="address the metrics endpoint listens on (CHATSERVER_METRICS_HOST; "
                       "default %(default)s: this machine only, whatever --host is)")
    serve.add_argument("--ws-port", type=int,
                       default=_env_int("WS_PORT", "0") or None,
                       help="also serve the web page at http://HOST:PORT/ and the protocol over "
                            "WebSocket at /ws on this port (default: off; env CHATSERVER_WS_PORT)")
    serve.add_argument("--allowed-origin", action="append", metavar="ORIGIN", default=None,
                       help="a page (scheme://host[:port], repeatable, * for any) that may open "
                       "the WebSocket at /ws; a browser from any other origin is refused (HTTP "
                       "403); clients that send no Origin (not browsers) are let in "
                       "(CHATSERVER_ALLOWED_ORIGINS, comma-separated; default: the page's own "
                       "origin only)")
    serve.add_argument("--webhook", metavar="URL", default=_env("WEBHOOK", "") or None,
                       help="POST every event (chats, friendships, groups, accounts) to this "
                       "URL as signed JSON, durably: at least once, in order per conversation "
                       "(CHATSERVER_WEBHOOK; default: off; needs a secret)")
    serve.add_argument("--webhook-secret", metavar="SECRET",
                       default=_env("WEBHOOK_SECRET", "") or None,
                       help="the HMAC-SHA256 key of the X-Chatserver-Signature header "
                       "(CHATSERVER_WEBHOOK_SECRET, better than the command line, which other "
                       "users of the machine can see)")
    serve.add_argument("--files", metavar="DIR", default=_env("FILES", "") or None,
                       help="folder where files shared in chats are kept, by content "
                       "(CHATSERVER_FILES; default: a folder NAME-files beside a SQLite "
                       "database NAME.db; with another database, files are off unless given)")
    serve.add_argument("--file-key", metavar="KEY", default=_env("FILE_KEY", "") or None,
                       help="secret that signs upload and download links, the same on every "
                       "node (CHATSERVER_FILE_KEY, preferred: a command line is visible to "
                       "other users; default: a random key per process)")
    serve.add_argument("--file-limit", type=int, metavar="BYTES",
                       default=_env_int("FILE_LIMIT", str(defaults.limits.file_bytes)),
                       help="largest file in bytes (CHATSERVER_FILE_LIMIT; default %(default)s)")
    serve.add_argument("--file-quota", type=int, metavar="BYTES",
                       default=_env_int("FILE_QUOTA", str(defaults.limits.file_bytes_per_day)),
                       help="bytes one user may upload in 24 hours (CHATSERVER_FILE_QUOTA; "
                       "default %(default)s)")
    serve.add_argument("--frame-limit", type=int,
                       default=_env_int("FRAME_LIMIT", str(defaults.frame_limit)),
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
    client.add_argument("--port", type=int, default=_env_int("PORT", str(defaults.port)),
                        help="server port (default %(default)s)")
    client.add_argument("--device", default=None,
                        help="the name this terminal logs in with, 1-64 characters: a login on "
                        "the same device takes over its session, other devices stay logged in "
                        "(default: this machine's host name)")
    client.add_argument("--web-port", type=int, default=_env_int("WS_PORT", "0") or None,
                        help="the server's web port (its --ws-port), where sendfile: and "
                        "download: move files (CHATSERVER_WS_PORT; default: files off)")

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
    names = db_commands.add_parser(
        "check-names", help="list the user and group names that break today's rules for names",
        description="Names registered before the rules (NFKC form, no control or format "
        "characters, no spaces at either end, something visible, no mixed-script look-alikes, "
        "unique ignoring case) keep working; this lists them, a line each, with the rules "
        "they break. Exit code 1 when there are any.")
    names.add_argument("--database", default=_env("DATABASE", defaults.database),
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
    import_legacy.add_argument("--legacy-charset", choices=("gbk", "utf8"), default="gbk",
                               help="how the original server spoke to its database: gbk (its "
                               "`set names gbk`: text is read back the same way, as the "
                               "original did) or utf8 (a server changed to `set names utf8`) "
                               "(default %(default)s)")
    from chatserver.entrypoints import admin

    admin.add_parser(commands, _env, defaults)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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

            return run_client(args.host, args.port, args.device, args.web_port)
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
        print(f"chatserver: {error}", file=sys.stderr)
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


def check_port(option: str, port: int | None, *, zero: str | None = None) -> None:
    """A port number outside 0-65535 (1-65535 where 0 means something else) is a mistake."""
    lowest = 0 if zero else 1
    if port is not None and not lowest <= port <= 65535:
        also = f", or 0 for {zero}" if zero else ""
        raise ConfigError(f"{option} {port} is not a port number: use 1 to 65535{also}")


def check_settings(args: argparse.Namespace) -> None:
    """Numbers serve cannot work with are mistakes, said before anything starts."""
    for option, value, lowest in (
        ("--frame-limit", args.frame_limit, 1), ("--idle-timeout", args.idle_timeout, 0.001),
        ("--request-burst", args.request_burst, 1), ("--request-rate", args.request_rate, 0.001),
        ("--node-lease", args.node_lease, 0.001), ("--stored-limit", args.stored_limit, 0),
        ("--connections-per-address", args.connections_per_address, 0),
        ("--stranger-messages-per-minute", args.stranger_messages_per_minute, 0),
        ("--stranger-share", args.stranger_share, 0),
        ("--group-entries-per-second", args.group_entries_per_second, 0),
    ):
        if value < lowest:
            must = "0 or more" if lowest == 0 else "more than 0"
            raise ConfigError(f"{option} {value} is too small: it must be {must}")
    cost = args.hash_cost
    if cost < 2 or cost & (cost - 1):
        raise ConfigError(f"--hash-cost {cost} is not a power of 2 from 2 up (the default "
                          f"is {Config().hash_cost})")


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
    )
    cluster.check()
    # Each mistake once, here, rather than once per node and then a wait for nothing.
    node_ports = cluster.node_ports() + cluster.node_web_ports()
    if max(node_ports) > 65535:
        raise ConfigError(f"the nodes' ports {min(node_ports)}-{max(node_ports)} go past 65535: "
                          "choose a lower --port or --node-port")
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
    logging.basicConfig(
        level=number,
        format=f"%(asctime)s %(levelname)s {node.replace('%', '%%')}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    others = number if number <= logging.DEBUG else max(number, logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(partial(_ours_or_at_least, others))


def _ours_or_at_least(level: int, record: logging.LogRecord) -> bool:
    """chatserver's own lines, and other libraries' from level up."""
    ours = record.name == "chatserver" or record.name.startswith("chatserver.")
    return ours or record.levelno >= level


def _serve(args: argparse.Namespace) -> int:
    check_port("--port", args.port, zero="any free port")
    check_port("--ws-port", args.ws_port)
    check_port("--metrics-port", args.metrics_port)
    check_settings(args)
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
        # The command line's list, if any, replaces the environment's.
        trusted_proxies=tuple(
            c.strip() for c in args.trusted_proxy or _env("TRUSTED_PROXIES", "").split(",")
            if c.strip()
        ),
        tls_cert=args.tls_cert,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        allowed_origins=tuple(
            o.strip() for o in args.allowed_origin or _env("ALLOWED_ORIGINS", "").split(",")
            if o.strip()
        ),
        ws_port=args.ws_port,
        files=args.files,
        file_key=args.file_key,
        tls_key=args.tls_key,
        hash_cost=args.hash_cost,
        webhook=args.webhook,
        webhook_secret=args.webhook_secret,
        limits=Limits(
            stored_per_user=args.stored_limit,
            history_days=args.history_days,
            devices_per_user=args.devices_per_user,
            group_members=args.group_member_limit,
            stranger_messages_per_minute=args.stranger_messages_per_minute,
            stranger_stored_share=args.stranger_share,
            group_entries_per_second=args.group_entries_per_second,
            group_entries_burst=args.group_entries_per_second,
            file_bytes=args.file_limit,
            file_bytes_per_day=args.file_quota,
            registrations_per_minute=args.registrations_per_minute,
            registrations_per_hour=args.registrations_per_hour,
            # REG requests of any outcome (a taken name too): six times the accounts.
            registration_attempts_per_minute=6 * args.registrations_per_minute,
        ),
        transport=TransportLimits(
            connections_per_address=args.connections_per_address,
            idle_timeout_seconds=args.idle_timeout,
            login_timeout_seconds=args.login_timeout,
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


async def serve(config: Config, transport: Literal["asyncio", "anyio"] = "asyncio") -> None:
    """Serve until SIGINT or SIGTERM, then log every session out and stop.

    A second signal, or the grace period running out, stops at once.
    """
    tls_context(config.tls_cert, config.tls_key)  # a bad file is said before anything opens
    # Signals are ours from start to end, so a late second one cannot kill us mid-cleanup.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(config) as app:
            await app.start_serving(transport)

            async def stop_gracefully(cancel_scope: anyio.CancelScope) -> None:
                # One grace for all: requests in hand, logging out, output draining.
                await app.stop_serving(SHUTDOWN_GRACE_SECONDS)
                cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(collector.keep_long_lived_frozen,
                                      freeze=collector.enabled()))
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
