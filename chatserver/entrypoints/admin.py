"""`chatserver admin`: an operator's commands against a database and a bus (a running cluster).

The command opens a node of its own (no listeners) on --database and --bus, so what it does
goes through the application's use cases and reaches the other nodes as the protocol's
requests do: a suspended user's sessions end on every node. Tables for people, --json for
scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import anyio

from chatserver.adapters.serialization import event_from_dict, event_to_dict
from chatserver.application import account_changes, operators, webhooks
from chatserver.application.node import Limits, Node
from chatserver.domain.errors import ChatError
from chatserver.domain.groups import Group, Role
from chatserver.domain.messages import Delivery, Kept
from chatserver.domain.users import INDEFINITELY_MS, Account, User, check_name
from chatserver.entrypoints import options
from chatserver.entrypoints.bootstrap import Config, ConfigError, open_node

EXPORT_FORMAT = "chatserver-user-export/1"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(commands: Any) -> None:
    """The `admin` subcommand and its own subcommands, on the `chatserver` parser."""
    common = argparse.ArgumentParser(add_help=False)
    options.add(common, "--database", help="the cluster's database")
    options.add(common, "--bus", help="the cluster's bus, redis://HOST:PORT/DB[?namespace=NAME], "
                "so that sessions on running nodes end; memory:// for a database no node serves")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    admin = commands.add_parser(
        "admin",
        help="an operator's commands: users, groups and webhook dead letters",
        description="Act on the accounts and groups of a database, and through --bus on the "
        "nodes serving it: suspend, reset a password, delete, export, dissolve.",
    )
    kinds = admin.add_subparsers(dest="admin_kind", required=True)

    users = kinds.add_parser("users", help="accounts").add_subparsers(
        dest="admin_command", required=True
    )
    listing = users.add_parser("list", parents=[common], help="every account")
    listing.add_argument("--online", action="store_true", help="only those logged in now")
    for name, help_text in (
        ("show", "one account: friends, groups, blocks, sessions"),
        ("unsuspend", "lift a suspension"),
        (
            "reset-password",
            "set a new password (read from a prompt, or from stdin when it is "
            "not a terminal; never from the command line) and end the account's sessions",
        ),
        ("delete", "delete the account as ACCOUNT delete does (friends told, groups left)"),
        ("export", "print one JSON document: profile, friends, groups, blocks, kept messages"),
    ):
        users.add_parser(name, parents=[common], help=help_text).add_argument(
            "user", metavar="ID|NAME"
        )
    suspend = users.add_parser(
        "suspend",
        parents=[common],
        help="suspend an account: its LOGIN is errno 12, its sessions end on every node",
    )
    suspend.add_argument("user", metavar="ID|NAME")
    suspend.add_argument(
        "--until",
        default=None,
        metavar="ISO|DURATION",
        help="an ISO time (2027-01-31, 2027-01-31T12:00:00Z) or a duration "
        "(90s, 30m, 12h, 7d, 2w); default: until unsuspended",
    )
    load = users.add_parser(
        "import", parents=[common], help="create an exported account in this database"
    )
    load.add_argument("file", help="a `users export` document, - for stdin")

    groups = kinds.add_parser("groups", help="groups").add_subparsers(
        dest="admin_command", required=True
    )
    groups.add_parser("list", parents=[common], help="every group")
    for name, help_text in (
        ("show", "one group and its members"),
        ("dissolve", "dissolve the group as its creator would (every member is told)"),
    ):
        groups.add_parser(name, parents=[common], help=help_text).add_argument(
            "group", metavar="ID", type=int
        )

    webhooks = kinds.add_parser("webhooks", help="webhook dead letters").add_subparsers(
        dest="admin_command", required=True
    )
    webhooks.add_parser(
        "dead", parents=[common], help="the events the receiver kept refusing, set aside"
    ).add_argument("--limit", type=int, default=1000, help="at most this many (%(default)s)")
    for name, help_text in (
        ("retry", "send dead letters again, after what waits in the outbox now"),
        ("drop", "forget dead letters"),
    ):
        chosen = webhooks.add_parser(name, parents=[common], help=help_text)
        which = chosen.add_mutually_exclusive_group(required=True)
        which.add_argument("ids", metavar="ID", type=int, nargs="*", default=[])
        which.add_argument("--all", action="store_true", help="every dead letter")


def run(args: argparse.Namespace, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """Carry out one admin command; the exit status (1: the user or group does not exist, or
    the database refuses the change; a mistake in the command raises ConfigError)."""
    command = f"{args.admin_kind} {args.admin_command}"
    password = read_password(stdin) if command == "users reset-password" else None
    if command == "webhooks dead" and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: list at least 1 dead letter")
    until_ms = None
    if command == "users suspend":
        until_ms = parse_until(args.until, datetime.now(UTC))
    config = Config(
        database=args.database,
        bus=args.bus,
        node_id=f"admin-{socket.gethostname()}-{os.getpid()}",
        # The serving nodes prune by their own --history-days; this node, which does not know
        # it and has no sessions (no device marks), must prune nothing.
        limits=Limits(history_days=0),
    )
    try:
        exported = None
        if command == "users import":
            exported = parse_export(_read_document(args.file, stdin))
        result = anyio.run(_act, config, args, password, until_ms, exported)
    except ChatError as error:
        print(f"chatserver admin: {error.message}", file=sys.stderr)
        return 1
    # An export is a JSON document whether or not --json was given.
    exporting = args.admin_kind == "users" and args.admin_command == "export"
    _print(result, as_json=args.json or exporting, out=out)
    return 0


async def _act(
    config: Config,
    args: argparse.Namespace,
    password: str | None,
    until_ms: int | None,
    exported: operators.Exported | None,
) -> Any:
    async with open_node(config) as app:
        node = app.node
        command = f"{args.admin_kind} {args.admin_command}"
        if command == "groups list":
            return [_group(g) for g in await operators.list_groups(node=node)]
        if command == "groups show":
            return _group(await operators.show_group(args.group, node=node))
        if command == "groups dissolve":
            members = await operators.dissolve_group_as_operator(args.group, node=node)
            return {"dissolved": args.group, "members": members}
        if args.admin_kind == "webhooks":
            return await _webhooks(args, node)
        if command == "users list":
            records = await operators.list_users(node=node, online_only=args.online)
            return [_account(r.account, r.online_devices) for r in records]
        if command == "users import":
            assert exported is not None
            await operators.import_account(exported, node=node)
            return {"imported": exported.account.user.id}
        account = await operators.find_user(args.user, node=node)
        user_id = account.user.id
        act: dict[str, Callable[[], Awaitable[Any]]] = {
            "users show": lambda: _details(user_id, node, with_inbox=False),
            "users export": lambda: _details(user_id, node, with_inbox=True),
            "users suspend": lambda: _suspend(user_id, until_ms, node),
            "users unsuspend": lambda: _unsuspend(user_id, node),
            "users reset-password": lambda: _reset(user_id, password, node),
            "users delete": lambda: _delete(user_id, node),
        }
        return await act[command]()


async def _webhooks(args: argparse.Namespace, node: Node) -> Any:
    if args.admin_command == "dead":
        return [
            {
                "id": dead.id,
                "conversation": dead.conversation,
                "written": _time(dead.created_ms),
                "set_aside": _time(dead.died_ms),
                "reason": dead.reason,
                "body": dead.body,
            }
            for dead in await webhooks.list_dead(node.uow, args.limit)
        ]
    ids = None if args.all else args.ids
    if ids:
        missing = set(ids) - await _dead_ids(node, set(ids))
        if missing:
            raise ChatError(f"no dead letter {', '.join(map(str, sorted(missing)))}")
    if args.admin_command == "retry":
        return {"retried": await webhooks.retry_dead(node.uow, ids)}
    return {"dropped": await webhooks.drop_dead(node.uow, ids)}


async def _dead_ids(node: Node, wanted: set[int]) -> set[int]:
    """Which of wanted are dead letters now."""
    found: set[int] = set()
    after = 0
    while True:
        page = await webhooks.list_dead(node.uow, 1000, after)
        found.update(dead.id for dead in page if dead.id in wanted)
        if len(page) < 1000:
            return found
        after = page[-1].id


async def _details(user_id: int, node: Node, *, with_inbox: bool) -> dict[str, Any]:
    details = await operators.show_user(user_id, node=node, with_inbox=with_inbox)
    document: dict[str, Any] = {
        "user": _account(details.account, details.online_devices),
        "friends": [{"id": f.id, "name": f.name} for f in details.friends],
        "groups": [
            {
                "id": g.id,
                "name": g.name,
                "description": g.description,
                "role": m.role.value,
                "muted_until": m.muted_until,
            }
            for g, m in details.groups
        ],
        "blocks": list(details.blocks),
        "blocked_by": list(details.blocked_by),
        "requests_from": list(details.requests_from),
        "requests_to": list(details.requests_to),
        "declines": [
            {"requester": requester, "addressee": addressee, "declined_ms": when}
            for requester, addressee, when in details.declines
        ],
        "last_pos": details.last_pos,
        "read_pos": details.read_pos,
    }
    if with_inbox:
        document = {"format": EXPORT_FORMAT, **document}
        document["user"]["password_hash"] = details.account.password_hash
        document["user"].pop("online")
        document["messages"] = [{"pos": k.pos, **event_to_dict(k.delivery)} for k in details.kept]
    return document


async def _suspend(user_id: int, until_ms: int | None, node: Node) -> dict[str, Any]:
    until = INDEFINITELY_MS if until_ms is None else until_ms
    ended = await operators.suspend_user(user_id, until, node=node)
    return {"suspended": user_id, "until": _time(until), "sessions_ended": ended}


async def _unsuspend(user_id: int, node: Node) -> dict[str, Any]:
    await operators.unsuspend_user(user_id, node=node)
    return {"unsuspended": user_id}


async def _reset(user_id: int, password: str | None, node: Node) -> dict[str, Any]:
    assert password is not None
    ended = await operators.reset_password(user_id, password, node=node)
    return {"password_reset": user_id, "sessions_ended": ended}


async def _delete(user_id: int, node: Node) -> dict[str, Any]:
    await account_changes.delete_account(user_id, node=node)
    return {"deleted": user_id}


def parse_export(document: dict[str, Any]) -> operators.Exported:
    """A `users export` document as the account to import. Raises ConfigError."""
    if document.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"not a `users export` document ({EXPORT_FORMAT})")
    try:
        exported = _exported(document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"a broken `users export` document: {error!r}") from None
    check_name(exported.account.user.name)
    return exported


def _exported(document: dict[str, Any]) -> operators.Exported:
    user = document["user"]
    kept = []
    for message in document["messages"]:
        entry = dict(message)
        pos = int(entry.pop("pos"))
        kept.append(Kept(pos, cast(Delivery, event_from_dict(entry))))
    return operators.Exported(
        account=Account(
            User(int(user["id"]), str(user["name"])),
            str(user["password_hash"]),
            _parse_time(user.get("suspended_until")),
        ),
        friends=tuple(int(f["id"]) for f in document["friends"]),
        groups=tuple(
            (
                Group(int(g["id"]), str(g["name"]), str(g["description"])),
                Role(g["role"]),
                int(g["muted_until"]),
            )
            for g in document["groups"]
        ),
        blocks=tuple(int(i) for i in document["blocks"]),
        blocked_by=tuple(int(i) for i in document["blocked_by"]),
        # Absent from documents written before they were exported.
        requests_from=tuple(int(i) for i in document.get("requests_from", ())),
        requests_to=tuple(int(i) for i in document.get("requests_to", ())),
        declines=tuple(
            (int(d["requester"]), int(d["addressee"]), int(d["declined_ms"]))
            for d in document.get("declines", ())
        ),
        last_pos=int(document["last_pos"]),
        read_pos=int(document["read_pos"]),
        kept=tuple(kept),
    )


def _account(account: Account, devices: Sequence[str]) -> dict[str, Any]:
    until = account.suspended_until_ms
    return {
        "id": account.user.id,
        "name": account.user.name,
        "suspended_until": None if until is None else _time(until),
        "online": list(devices),
    }


def _group(details: operators.GroupDetails) -> dict[str, Any]:
    group = details.group
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "members": [
            {
                "id": m.user.id,
                "name": m.user.name,
                "role": m.role.value,
                "muted_until": m.muted_until,
            }
            for m in details.members
        ],
    }


def _time(ms: int) -> str:
    if ms >= INDEFINITELY_MS:
        return "indefinitely"
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    # Milliseconds only when there are some, so an export gives back the very same time.
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text == "indefinitely":
        return INDEFINITELY_MS
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def parse_until(text: str | None, now: datetime) -> int | None:
    """--until: None (indefinitely), a duration from now (90s, 30m, 12h, 7d, 2w) or an ISO
    time (without a zone: UTC), as ms since the epoch. Raises ConfigError."""
    if text is None:
        return None
    duration = _DURATION.match(text)
    if duration:
        seconds = int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        if seconds == 0:
            raise ConfigError(f"--until {text!r} is now: give a longer duration")
        until = int(now.timestamp() * 1000) + seconds * 1000
        if until >= INDEFINITELY_MS:
            raise ConfigError(f"--until {text!r} ends after the year 9999: leave --until out "
                              "to suspend until unsuspended")
        return until
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--until {text!r}: use an ISO time (2027-01-31T12:00:00Z) or a "
            "duration (90s, 30m, 12h, 7d, 2w)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= now:
        raise ConfigError(f"--until {text!r} is in the past")
    return int(when.timestamp() * 1000)


def read_password(stdin: TextIO) -> str:
    """The new password: from a prompt (asked twice) on a terminal, else stdin's first line."""
    if stdin.isatty():
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password given")
    return password


def _read_document(path: str, stdin: TextIO) -> dict[str, Any]:
    try:
        text = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} is not a `users export` document")
    return document


def _print(result: Any, *, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    if isinstance(result, list):
        out.write(_table(result))
        return
    for key, value in result.items():
        if isinstance(value, dict):  # the account of `users show`: its fields, one a line
            _print(value, as_json=False, out=out)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out.write(f"{key}:\n")
            out.write("".join("  " + line + "\n" for line in _table(value).splitlines()))
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            out.write(f"{key}: {'' if shown is None else shown}\n")


def _table(rows: list[dict[str, Any]]) -> str:
    """Rows as aligned columns under a header; lists joined by commas, None blank."""
    if not rows:
        return "(none)\n"

    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(
                f"{v['name']}({v['id']}, {v['role']})" if isinstance(v, dict) else str(v)
                for v in value
            )
        return "" if value is None else str(value)

    def shown(column: str, value: Any) -> str:
        # Mutes are ms since the epoch (as --json and exports keep them); people read a time.
        if column == "muted_until" and isinstance(value, int):
            return _time(value) if value > 0 else ""
        return cell(value)

    columns = list(rows[0])
    cells = [[shown(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "".join(line.rstrip() + "\n" for line in lines)
