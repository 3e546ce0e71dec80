"""The command line's settings in one table: each option with the Config field it sets, its
environment variable, its help and its check.

`chatserver serve` takes every option of the table; `client`, `cluster`, `db` and `admin` take
the ones they share with it (`--database`, `--bus`, `--host`, ...) from here too, each with help
of its own where its meaning differs. The terminal client's own options (`--tls`, ...), which
no Config field holds, are in CLIENT_OPTIONS. An option given on the command line wins over its
environment variable, which wins over Config's default.
"""

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from attrs import evolve, frozen

from chatserver.entrypoints.bootstrap import CHOICES, SHUTDOWN_GRACE_SECONDS, Config, ConfigError

Check = Callable[[str, Any], None]


def at_least(lowest: float) -> Check:
    """A number below lowest is a mistake (0: "0 or more", else "more than 0")."""

    def check(option: str, value: float) -> None:
        if not math.isfinite(value):  # float("nan") passes every comparison below
            raise ConfigError(f"{option} {value} is not a number: give a finite one")
        if value < lowest:
            must = ("0 or more" if lowest == 0 else "more than 0" if lowest <= 1
                    else f"{lowest:g} or more")
            raise ConfigError(f"{option} {value} is too small: it must be {must}")

    return check


def check_port(option: str, port: int | None, *, zero: str | None = None) -> None:
    """A port number outside 0-65535 (1-65535 where 0 means something else) is a mistake."""
    lowest = 0 if zero else 1
    if port is not None and not lowest <= port <= 65535:
        also = f", or 0 for {zero}" if zero else ""
        raise ConfigError(f"{option} {port} is not a port number: use 1 to 65535{also}")


def a_port(zero: str | None = None) -> Check:
    return lambda option, port: check_port(option, port, zero=zero)


def a_power_of_two(option: str, cost: int) -> None:
    if cost < 2 or cost & (cost - 1):
        raise ConfigError(f"{option} {cost} is not a power of 2 from 2 up (the default "
                          f"is {Config().hash_cost})")


def origins(option: str, values: Sequence[str]) -> None:
    """A browser's Origin is scheme://host[:port]: anything else would never match one."""
    for value in values:
        scheme, _, rest = value.strip().rstrip("/").partition("://")
        if value.strip() != "*" and not (scheme and rest and "/" not in rest):
            raise ConfigError(f"{option} {value!r} is not an origin: use scheme://host[:port] "
                              "(https://chat.example.com) or * for any")


@frozen
class Option:
    """One setting of the command line.

    kind: "text"; "int" or "float"; "port" (an int; None is off, as is 0 in the environment);
    "switch" (--NAME and --no-NAME; 1/0, true/false, yes/no or on/off in the environment);
    "list" (repeatable, comma-separated in the environment; the command line's list replaces
    the environment's); "choice" (one of bootstrap.CHOICES[flag]).
    """

    flag: str
    setting: str  # the Config field: "port", "limits.history_days", "transport.pipeline"
    help: str
    kind: str = "text"
    env: str = ""  # the environment variable, when it is not CHATSERVER_ + the flag's name
    default_text: str = ""  # how help names the default, when its value does not say it
    check: Check | None = None
    metavar: str | None = None
    fallback: Any = None  # the default of an option without a setting (a client's own)

    @property
    def variable(self) -> str:
        return self.env or "CHATSERVER_" + self.flag[2:].upper().replace("-", "_")

    def default(self, config: Config) -> Any:
        """The environment's value if it has one, else config's."""
        text = os.environ.get(self.variable, "")
        if text == "" and not self.setting:
            return self.fallback
        if text == "":
            value = config
            for name in self.setting.split("."):
                value = getattr(value, name)
            return value
        return self.parse(text)

    def parse(self, text: str) -> Any:
        """The value of the environment variable's text."""
        if self.kind in ("int", "port", "float"):
            kind = float if self.kind == "float" else int
            try:
                number = kind(text)
            except ValueError:
                what = "a number" if kind is float else "an integer"
                raise ConfigError(f"{self.variable}={text!r} is not {what}") from None
            return None if self.kind == "port" and number == 0 else number
        if self.kind == "switch":
            if text.lower() not in _SWITCH:
                raise ConfigError(f"{self.variable}={text!r} is not 1 or 0 (on or off)")
            return _SWITCH[text.lower()]
        if self.kind == "list":
            return tuple(item.strip() for item in text.split(",") if item.strip())
        return text

    def describe(self, help_text: str, default: Any) -> str:
        """The help: what it does, its environment variable and its default."""
        if self.kind == "switch":
            variable = f"{self.variable}=1 or 0"
            shown = "on" if default else "off"
        else:
            variable = self.variable + (", comma-separated" if self.kind == "list" else "")
            shown = "off" if default is None else str(default)
        shown = f": {self.default_text}" if self.default_text else f" {shown}"
        return f"{help_text} ({variable}; default{shown})".replace("%", "%%")


_SWITCH = {"1": True, "true": True, "yes": True, "on": True,
           "0": False, "false": False, "no": False, "off": False}

_OPTIONS = (
    Option("--host", "host", "address to listen on"),
    Option("--port", "port", "TCP port, 0 for any free one", "int",
           check=a_port(zero="any free port")),
    Option("--database", "database",
           "sqlite:///relative.db, sqlite:////absolute.db, mysql://USER:PASSWORD@HOST:PORT/DB "
           "or memory://"),
    Option("--bus", "bus", "how nodes reach each other: memory:// for a single node, "
           "redis://HOST:PORT/DB[?namespace=NAME] for a cluster"),
    Option("--node-id", "node_id", "this node's name in a cluster",
           default_text="host name and process id"),
    Option("--node-lease", "node_lease_seconds",
           "seconds a node that stopped renewing its Redis lease (crashed) still counts as "
           "alive; its users count as offline after that", "float", check=at_least(0.001)),
    Option("--behind-proxy", "behind_proxy",
           "clients reach this node through nginx: turn off the limits per client address "
           "(connections, failed logins), which would see only nginx's address", "switch"),
    Option("--proxy-protocol", "proxy_protocol",
           "every connection begins with a PROXY protocol header (v1 or v2, nginx: "
           "proxy_protocol on;) naming the real client, whose address the limits per address "
           "then use; a connection without one is closed", "switch"),
    Option("--trusted-proxy", "trusted_proxies",
           "with --proxy-protocol or --behind-proxy: a proxy (address or CIDR block, "
           "repeatable) whose PROXY header, or X-Forwarded-For on --ws-port, names the client; "
           "from any other peer they are refused and logged", "list",
           env="CHATSERVER_TRUSTED_PROXIES", metavar="CIDR",
           default_text="loopback only, 127.0.0.0/8 and ::1"),
    Option("--connections-per-address", "transport.connections_per_address",
           "open connections allowed from one address, 0 for no limit", "int",
           check=at_least(0)),
    Option("--idle-timeout", "transport.idle_timeout_seconds",
           "seconds a logged-in client may stay silent (clients PING) before it is "
           "disconnected", "float", check=at_least(0.001)),
    Option("--login-timeout", "transport.login_timeout_seconds",
           "seconds a client that has spoken may stay silent before logging in; not for "
           "clients of the original server, nor for connections that have sent nothing",
           "float", check=at_least(0.001)),
    Option("--tls-cert", "tls_cert",
           "PEM certificate (chain): serve TLS instead of plain TCP (needs --tls-key)"),
    Option("--tls-key", "tls_key", "PEM private key for --tls-cert"),
    Option("--request-burst", "transport.request_burst",
           "requests a connection may make at once (the protocol promises at least 100)",
           "int", check=at_least(1)),
    Option("--request-rate", "transport.requests_per_second",
           "requests per second a connection may keep up (the protocol promises at least 50)",
           "float", check=at_least(0.001)),
    Option("--stored-limit", "limits.stored_per_user",
           "messages a login pushes at most to a device that fell behind (the newest of what "
           "waits for it; the rest stays readable with SYNC)", "int", check=at_least(0)),
    Option("--history-days", "limits.history_days",
           "days messages are kept in users' inboxes, for SYNC and HISTORY; 0: only until "
           "every device of the user has had them, as in version 1", "int",
           check=at_least(0)),
    Option("--devices-per-user", "limits.devices_per_user",
           "devices a user may be logged in on at once; a login on one more ends the session "
           "logged in longest ago", "int", check=at_least(1)),
    Option("--group-member-limit", "limits.group_members",
           "members one group may have; past it ADD_GROUP is errno 12; 0: no limit", "int",
           check=at_least(0)),
    Option("--stranger-messages-per-minute", "limits.stranger_messages_per_minute",
           "messages strangers (not friends, no group in common) may send, all together, to "
           "one user who is not online on the node, per minute after a burst of "
           f"{Config().limits.stranger_messages_burst}; errno 9 past it; 0: no limit", "int",
           check=at_least(0)),
    Option("--stranger-share", "limits.stranger_stored_share",
           "strangers' messages are refused (errno 14) while this many wait for the recipient "
           "that none of their devices has had; friends' never are; 0: no share", "int",
           check=at_least(0)),
    Option("--group-entries-per-second", "limits.group_entries_per_second",
           "inbox entries (one per member) one group's messages may write at once and then per "
           "second; GROUP_CHAT is errno 9 past it; 0: no limit", "int", check=at_least(0)),
    Option("--registrations-per-minute", "limits.registrations_per_minute",
           "accounts one client address may create within a minute, and a sixth of the REG "
           "requests it may make (whatever their outcome), 0 for no limit; past it REG gets "
           "errno 9", "int", check=at_least(0)),
    Option("--registrations-per-hour", "limits.registrations_per_hour",
           "accounts one client address may create within an hour, 0 for no limit; past it "
           "REG gets errno 9", "int", check=at_least(0)),
    Option("--hash-cost", "hash_cost",
           "scrypt's n for new password hashes, a power of 2 (16384: 16 MiB, ~85 ms)", "int",
           check=a_power_of_two),
    Option("--metrics-port", "metrics_port",
           "serve Prometheus metrics at http://METRICS_HOST:PORT/metrics", "port",
           check=a_port()),
    Option("--metrics-host", "metrics_host",
           "address the metrics endpoint listens on: this machine only, whatever --host is"),
    Option("--ws-port", "ws_port",
           "also serve the web page at http://HOST:PORT/ and the protocol over WebSocket at "
           "/ws on this port", "port", check=a_port()),
    Option("--allowed-origin", "allowed_origins",
           "a page (scheme://host[:port], repeatable, * for any) that may open the WebSocket "
           "at /ws; a browser from any other origin is refused (HTTP 403); clients that send "
           "no Origin (not browsers) are let in", "list", env="CHATSERVER_ALLOWED_ORIGINS",
           metavar="ORIGIN", default_text="the page's own origin only", check=origins),
    Option("--webhook", "webhook",
           "POST every event (chats, friendships, groups, accounts) to this URL as signed "
           "JSON, durably: at least once, in order per conversation (needs a secret)",
           metavar="URL"),
    Option("--webhook-secret", "webhook_secret",
           "the HMAC-SHA256 key of the X-Chatserver-Signature header (the environment is "
           "better than the command line, which other users of the machine can see)",
           metavar="SECRET", default_text="none"),
    Option("--files", "files",
           "folder where files shared in chats are kept, by content, or s3://BUCKET/PREFIX",
           metavar="DIR", default_text="a folder NAME-files beside a SQLite database NAME.db; "
           "with another database, files are off unless given"),
    Option("--file-key", "file_key",
           "secret that signs upload and download links, the same on every node (the "
           "environment is better: a command line is visible to other users)",
           metavar="KEY", default_text="a random key per process"),
    Option("--file-limit", "limits.file_bytes", "largest file in bytes", "int",
           metavar="BYTES", check=at_least(0)),
    Option("--file-quota", "limits.file_bytes_per_day",
           "bytes one user may upload in 24 hours", "int", metavar="BYTES",
           check=at_least(0)),
    Option("--frame-limit", "frame_limit",
           "largest frame in bytes (1024 or more: a LOGIN or a short chat must fit)", "int",
           check=at_least(1024)),
    Option("--transport", "driver",
           "asyncio Protocols (less CPU per message and memory per connection), or anyio "
           "streams", "choice"),
    Option("--loop", "event_loop",
           "event loop: the standard library's, or uvloop if installed (pip install uvloop)",
           "choice"),
    Option("--pipeline", "transport.pipeline",
           "serve chats, receipts and READ while the requests before them on their connection "
           "still wait; --no-pipeline serves each connection's requests one at a time, for "
           "comparisons", "switch"),
    Option("--gc", "gc",
           "freeze: keep the garbage collector off the objects that live as long as sessions "
           "(docs/performance.md); default: the collector as CPython sets it, for comparisons",
           "choice"),
    Option("--log-level", "log_level", "DEBUG, INFO, WARNING or ERROR"),
)
OPTIONS = {option.flag: option for option in _OPTIONS}

# `chatserver client`'s own options: no Config field holds them (setting "").
_CLIENT_OPTIONS = (
    Option("--tls", "", "speak TLS to the server (its --tls-cert), checking its certificate "
           "against the system's trust store, or --tls-ca's", "switch", fallback=False),
    Option("--tls-ca", "", "PEM file of the CA, or the server's own (self-signed) "
           "certificate, to trust instead of the system's (implies --tls)", metavar="FILE",
           default_text="the system's trust store"),
)
CLIENT_OPTIONS = {option.flag: option for option in _CLIENT_OPTIONS}


def add(parser: argparse.ArgumentParser, flag: str, *, help: str | None = None,
        default: Any = None, config: Config | None = None, name: str | None = None,
        default_text: str | None = None) -> None:
    """Add the option of the table named flag to parser, with help of parser's own if given
    (its environment variable and default are named after it), and another default, another
    name or another way of naming the default on this parser if given (the environment
    variable stays the table's)."""
    option = OPTIONS[flag] if flag in OPTIONS else CLIENT_OPTIONS[flag]
    if default_text is not None:
        option = evolve(option, default_text=default_text)
    value = option.default(config or Config())
    if default is not None and not os.environ.get(option.variable):
        value = default
    keywords: dict[str, Any] = {"default": value, "metavar": option.metavar,
                                "help": option.describe(help or option.help, value)}
    if option.kind == "switch":
        keywords.update(action=argparse.BooleanOptionalAction)
        del keywords["metavar"]
    elif option.kind == "list":
        keywords.update(action=_Replace, default=tuple(value))
    elif option.kind == "choice":
        keywords.update(metavar="{" + ",".join(CHOICES[flag]) + "}")
    elif option.kind != "text":
        keywords.update(type=float if option.kind == "float" else int)
    parser.add_argument(name or flag, dest=(name or flag)[2:].replace("-", "_"), **keywords)


def add_all(parser: argparse.ArgumentParser) -> None:
    """Every option of the table: `serve`'s command line."""
    config = Config()
    for flag in OPTIONS:
        add(parser, flag, config=config)


def config_from(args: argparse.Namespace) -> Config:
    """The Config that `serve`'s parsed options say; a value that cannot work is ConfigError."""
    defaults = Config()
    settings: dict[str, dict[str, Any]] = {"": {}, "limits": {}, "transport": {}}
    for option in _OPTIONS:
        value = getattr(args, option.flag[2:].replace("-", "_"))
        if option.check is not None and value is not None:
            # The value may be the environment's: then the message names its variable too.
            set_there = os.environ.get(option.variable, "") != ""
            option.check(f"{option.flag} (or {option.variable})" if set_there else option.flag,
                         value)
        part, _, name = option.setting.rpartition(".")
        settings[part][name] = value
    limits = evolve(defaults.limits, **settings["limits"])
    limits = evolve(
        limits,
        group_entries_burst=limits.group_entries_per_second,
        # REG requests of any outcome (a taken name too): six times the accounts.
        registration_attempts_per_minute=6 * limits.registrations_per_minute,
    )
    # Requests in hand get half of serve's grace at shutdown; the rest is for logging out.
    transport = evolve(defaults.transport, **settings["transport"],
                       request_grace_seconds=SHUTDOWN_GRACE_SECONDS / 2)
    config = Config(**settings[""], limits=limits, transport=transport)
    # One port for two listeners was said as "already in use: stop what uses it" (itself).
    ports = [("--port", config.port), ("--ws-port", config.ws_port),
             ("--metrics-port", config.metrics_port)]
    for i, (flag, port) in enumerate(ports):
        for other, same in ports[i + 1:]:
            apart = (other == "--metrics-port" and config.metrics_host != config.host
                     and config.host not in ("0.0.0.0", "::", ""))
            if port and port == same and not apart:
                raise ConfigError(f"{other} {same} is {flag}'s port too: give each its own")
    return config


class _Replace(argparse.Action):
    """A repeatable option whose first use on the command line replaces the default (the
    environment's list), and whose later uses add to it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest)
        kept = () if current is self.default else current
        setattr(namespace, self.dest, (*kept, values))
