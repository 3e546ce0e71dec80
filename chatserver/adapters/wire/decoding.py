"""Turning one frame into an application command, strictly: no type coercion, errno 7 otherwise."""

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from chatserver.adapters.wire import protocol
from chatserver.adapters.wire.protocol import Dialect
from chatserver.application import commands
from chatserver.application.commands import Command, Login


# Named tuples rather than frozen attrs classes: as immutable, and four times faster to make.
class Request(NamedTuple):
    """A well-formed request: its msgid, the client's ``seq``, the command, and the ``id`` the
    client claims to be (None when absent; for LOGIN the id is part of the command instead)."""

    msgid: int
    seq: int | None
    command: Command
    claimed_id: int | None = None


class BadRequest(NamedTuple):
    """A frame that is not a well-formed request: answered with errno 7 and ``message``."""

    reply_to: int
    seq: int | None
    message: str


# msgid -> (command class, wire name of each attribute whose name differs on the wire)
COMMANDS: dict[int, tuple[type[Any], dict[str, str]]] = {
    protocol.LOGIN: (Login, {"user_id": "id"}),
    protocol.LOGOUT: (commands.Logout, {}),
    protocol.REGISTER: (commands.Register, {}),
    protocol.ONE_CHAT: (
        commands.SendDirectMessage,
        {"recipient_id": "toid", "text": "msg", "file_id": "file"},
    ),
    protocol.ADD_FRIEND: (commands.AddFriend, {"friend_id": "friendid"}),
    protocol.CREATE_GROUP: (
        commands.CreateGroup,
        {"name": "groupname", "description": "groupdesc"},
    ),
    protocol.ADD_GROUP: (commands.JoinGroup, {"group_id": "groupid"}),
    protocol.GROUP_CHAT: (
        commands.SendGroupMessage,
        {"group_id": "groupid", "text": "msg", "file_id": "file"},
    ),
    protocol.FRIEND_RESPONSE: (commands.AnswerFriend, {"requester_id": "friendid"}),
    protocol.PING: (commands.Ping, {}),
    protocol.LEAVE_GROUP: (commands.LeaveGroup, {"group_id": "groupid"}),
    protocol.REMOVE_FRIEND: (commands.RemoveFriend, {"friend_id": "friendid"}),
    protocol.BLOCK: (commands.BlockUser, {"user_id": "userid"}),
    protocol.ACCOUNT: (commands.AccountChange, {}),
    protocol.RECEIPT: (commands.Receipt, {}),
    protocol.SYNC: (commands.Sync, {}),
    protocol.HISTORY: (commands.History, {"with_user": "with", "group_id": "groupid"}),
    protocol.READ: (commands.Read, {}),
    protocol.GROUP_KICK: (commands.KickMember, {"group_id": "groupid", "user_id": "userid"}),
    protocol.GROUP_ROLE: (commands.SetMemberRole, {"group_id": "groupid", "user_id": "userid"}),
    protocol.GROUP_TRANSFER: (
        commands.TransferGroup,
        {"group_id": "groupid", "user_id": "userid"},
    ),
    protocol.GROUP_DISSOLVE: (commands.DissolveGroup, {"group_id": "groupid"}),
    protocol.GROUP_MUTE: (commands.MuteMember, {"group_id": "groupid", "user_id": "userid"}),
    protocol.GROUP_UPDATE: (
        commands.UpdateGroup,
        {"group_id": "groupid", "name": "groupname", "description": "groupdesc"},
    ),
    protocol.FILE_UPLOAD: (commands.UploadFile, {}),
    protocol.FILE_URL: (commands.FileUrl, {}),
}
# The original server's clients speak version 1 only.
VERSION_2_MSGIDS = frozenset(
    {
        protocol.SYNC,
        protocol.HISTORY,
        protocol.READ,
        protocol.GROUP_KICK,
        protocol.GROUP_ROLE,
        protocol.GROUP_TRANSFER,
        protocol.GROUP_DISSOLVE,
        protocol.GROUP_MUTE,
        protocol.GROUP_UPDATE,
        protocol.BLOCK,
        protocol.ACCOUNT,
        protocol.FILE_UPLOAD,
        protocol.FILE_URL,
    }
)
LEGACY_DEVICE = "legacy"

# Attributes a client must not set: whether a session gets notices follows from its dialect.
SERVER_SIDE_ATTRIBUTES = {Login: ("notices",)}

# Messages whose ``id`` is part of the command rather than a claim of identity.
_ID_IN_COMMAND = (protocol.LOGIN, protocol.REGISTER)


class WrongType(TypeError):
    """A field holds a JSON value of the wrong kind; the message says which kind was expected."""


INT64 = range(-(2**63), 2**63)  # what every id column of every database can hold
_INT64_MIN, _INT64_END = INT64.start, INT64.stop  # compared with directly: thrice as fast

# A Request made without its __new__, a Python function: the hot path makes one per frame.
_tuple_new = tuple.__new__


def _strict(expected_type: type, description: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        # An exact type check: bool is a subclass of int, and true is not an integer here.
        if type(value) is expected_type and (expected_type is not int or value in INT64):
            return value
        raise WrongType(f"expected {description}")

    return structure


def _structure_ids(value: Any, _: Any) -> tuple[int, ...]:
    if type(value) is list and all(type(item) is int and item in INT64 for item in value):
        return tuple(value)
    raise WrongType("expected a list of integers")


def _make_converter(detailed_validation: bool) -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=detailed_validation)
    for python_type, description in (
        (int, "an integer"),  # of 64 bits: what every id column holds
        (str, "a string"),
        (bool, "a boolean"),
    ):
        hook = _strict(python_type, description)
        converter.register_structure_hook(python_type, hook)
        # An optional field may be left out, but null is not a value of its type.
        converter.register_structure_hook(python_type | None, hook)
    converter.register_structure_hook_func(lambda t: t == tuple[int, ...], _structure_ids)
    for command_class, renames in COMMANDS.values():
        # Typed loosely: make_dict_structure_fn mixes AttributeOverride kwargs with bool flags.
        overrides: dict[str, Any] = {name: override(rename=wire) for name, wire in renames.items()}
        for name in SERVER_SIDE_ATTRIBUTES.get(command_class, ()):
            overrides[name] = override(omit=True)
        converter.register_structure_hook(
            command_class, make_dict_structure_fn(command_class, converter, **overrides)
        )
    return converter


# Structuring runs without detailed validation, twice as fast; a request that fails is structured
# again with it, to learn which field was at fault.
_fast_converter = _make_converter(detailed_validation=False)
_detailed_converter = _make_converter(detailed_validation=True)
_STRUCTURE_HOOKS = {
    msgid: _fast_converter.get_structure_hook(command_class)
    for msgid, (command_class, _) in COMMANDS.items()
}


# The hottest requests are read by hand, as strictly as by cattrs: each returns the command when
# every field is present and of its exact type, else None, and cattrs then names the fault.
def _int64(value: Any) -> bool:
    return type(value) is int and _INT64_MIN <= value < _INT64_END


def _one_chat(body: dict[str, Any]) -> Command | None:
    recipient_id, text = body.get("toid"), body.get("msg")
    if (type(recipient_id) is int and _INT64_MIN <= recipient_id < _INT64_END
            and type(text) is str and "file" not in body):
        return commands.SendDirectMessage(recipient_id, text)
    return None


def _group_chat(body: dict[str, Any]) -> Command | None:
    group_id, text = body.get("groupid"), body.get("msg")
    if (type(group_id) is int and _INT64_MIN <= group_id < _INT64_END
            and type(text) is str and "file" not in body):
        return commands.SendGroupMessage(group_id, text)
    return None


def _receipt(body: dict[str, Any]) -> Command | None:
    msg_ids = body.get("msg_ids")
    if type(msg_ids) is list and all(map(_int64, msg_ids)):
        return commands.Receipt(tuple(msg_ids))
    return None


_PING = commands.Ping()

FAST_PATHS: dict[int, Callable[[dict[str, Any]], Command | None]] = {
    protocol.ONE_CHAT: _one_chat,
    protocol.GROUP_CHAT: _group_chat,
    protocol.RECEIPT: _receipt,
    protocol.PING: lambda body: _PING,
}


def decode(frame: bytes, dialect: Dialect = Dialect.MODERN) -> Request | BadRequest:
    """Read one frame; any bytes at all give a Request or a BadRequest, never an exception."""
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return BadRequest(0, None, "bad JSON")
    if type(body) is not dict:
        return BadRequest(0, None, "a request must be a JSON object")
    seq = body.get("seq")
    msgid = body.get("msgid")
    if type(msgid) is not int:
        echo = seq if type(seq) is int else None
        return BadRequest(0, echo, _field_fault("msgid", body, "an integer"))
    # Present and not an integer (null included): the common case costs one type check.
    if type(seq) is not int and (seq is not None or "seq" in body):
        return BadRequest(msgid, None, _field_fault("seq", body, "an integer"))
    fast = FAST_PATHS.get(msgid)
    if fast is not None:  # none of these takes an id in its command
        claimed_id = body.get("id")
        if type(claimed_id) is not int and (claimed_id is not None or "id" in body):
            return BadRequest(msgid, seq, _field_fault("id", body, "an integer"))
        command = fast(body)
        if command is not None:
            return _tuple_new(Request, (msgid, seq, command, claimed_id))
    entry = COMMANDS.get(msgid)
    if entry is None or (dialect is Dialect.LEGACY and msgid in VERSION_2_MSGIDS):
        return BadRequest(msgid, seq, f"unknown msgid {msgid}")
    claimed_id = None
    if msgid not in _ID_IN_COMMAND:
        claimed_id = body.get("id")
        if "id" in body and type(claimed_id) is not int:
            return BadRequest(msgid, seq, _field_fault("id", body, "an integer"))
    command_class, renames = entry
    try:
        command = _STRUCTURE_HOOKS[msgid](body, command_class)
    except (WrongType, KeyError):
        return BadRequest(msgid, seq, _describe_fault(body, command_class, renames))
    if type(command) is Login:
        if command.password is None and command.token is None:
            return BadRequest(msgid, seq, "password: missing")
        if command.user_id is None and command.name is None and command.token is None:
            return BadRequest(msgid, seq, "id or name: one of them is required")
        if dialect is Dialect.LEGACY:
            command = attrs.evolve(command, notices=False, device=LEGACY_DEVICE, since=None)
    return Request(msgid, seq, command, claimed_id)


def _field_fault(name: str, body: dict[str, Any], expected: str) -> str:
    return f"{name}: missing" if name not in body else f"{name}: expected {expected}"


def _describe_fault(body: dict[str, Any], command_class: type[Any], renames: dict[str, str]) -> str:
    """Name the first faulty field of ``body`` as the client spelled it."""
    try:
        _detailed_converter.structure(body, command_class)
    except cattrs.ClassValidationError as error:
        with_notes, _ = error.group_exceptions()
    else:
        with_notes = []
    if not with_notes:
        return "malformed request"
    fault, note = with_notes[0]
    field = renames.get(note.name, note.name)
    if isinstance(fault, KeyError):
        return f"{field}: missing"
    if isinstance(fault, WrongType):
        return f"{field}: {fault}"
    return f"{field}: invalid value"
