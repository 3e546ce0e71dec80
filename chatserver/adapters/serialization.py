"""The adapters' private JSON form of the core's events: stored deliveries, bus messages.

A kind name and the attrs fields. Renaming or removing a field needs a data migration;
adding one with a default does not.
"""

from operator import attrgetter
from typing import Any

import attrs
import orjson

from chatserver.domain.messages import (
    Delivery,
    DirectMessage,
    Event,
    FileRef,
    FriendAnswer,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupEvent,
    GroupMessage,
    KickedNotice,
    PresenceNotice,
    ReadNotice,
)

EVENT_KINDS: dict[str, type[Event]] = {
    "direct": DirectMessage,
    "group": GroupMessage,
    "friend_answer": FriendAnswer,
    "group_event": GroupEvent,
    "friend_request": FriendRequestNotice,
    "presence": PresenceNotice,
    "kicked": KickedNotice,
    "read": ReadNotice,
    "friend_removed": FriendRemovedNotice,
}
KIND_OF_EVENT = {cls: kind for kind, cls in EVENT_KINDS.items()}
DELIVERY_KINDS: dict[str, type[Delivery]] = {
    "direct": DirectMessage,
    "group": GroupMessage,
    "friend_answer": FriendAnswer,
    "group_event": GroupEvent,
}


def dump_delivery(delivery: Delivery) -> tuple[str, str]:
    """The kind and JSON of a delivery: what attrs.asdict gives, read by name (3x cheaper;
    paid once per message in the inbox's batch, tests/unit/test_serialization.py)."""
    cls = type(delivery)
    data = dict(zip(_FIELDS[cls], _GETTERS[cls](delivery), strict=True))
    attached = data.get("file")
    if attached is not None:
        data["file"] = attrs.asdict(attached)
    return KIND_OF_EVENT[cls], orjson.dumps(data).decode()


def load_delivery(kind: str, body: str | bytes) -> Delivery:
    return DELIVERY_KINDS[kind](**_with_file(orjson.loads(body)))


def _with_file(data: dict[str, Any]) -> dict[str, Any]:
    """A chat's attached file, kept as a plain object, made a FileRef again."""
    attached = data.get("file")
    if isinstance(attached, dict):
        data["file"] = FileRef(**attached)
    return data


# Every event's fields are plain values: read by name, without attrs.asdict's recursion.
_FIELDS = {cls: tuple(field.name for field in attrs.fields(cls)) for cls in KIND_OF_EVENT}
# Each class's fields as one tuple (attrgetter of them all, one call per event).
_GETTERS = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}


def event_to_dict(event: Event) -> dict[str, Any]:
    cls = type(event)
    data: dict[str, Any] = {"kind": KIND_OF_EVENT[cls]}
    for name in _FIELDS[cls]:
        data[name] = getattr(event, name)
    attached = data.get("file")
    if attached is not None:
        data["file"] = attrs.asdict(attached)
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event of event_to_dict's form. data is used up (its "kind" is taken out)."""
    kind = data.pop("kind")
    return EVENT_KINDS[str(kind)](**_with_file(data))
