"""Groups, their members and roles, and the rules for names and descriptions."""

import enum
from collections.abc import Sequence

from attrs import frozen

from chatserver.domain.errors import InvalidRequest, NotPermitted
from chatserver.domain.names import check_display_name
from chatserver.domain.users import User

MAX_GROUP_NAME_LENGTH = 50
MAX_GROUP_DESCRIPTION_LENGTH = 200
# Members a group may have (PROTOCOL.md Version 2, "Groups that can be run"); configurable.
DEFAULT_MEMBER_LIMIT = 2000


class Role(enum.Enum):
    CREATOR = "creator"
    ADMIN = "admin"
    NORMAL = "normal"


class Action(enum.Enum):
    """What one member may do to another member, or to the group (target None)."""

    KICK = "kick"
    SET_ROLE = "role"
    TRANSFER = "transfer"
    MUTE = "mute"
    DISSOLVE = "dissolve"
    UPDATE = "update"


# The one table of who may do what to whom: (actor's role, action) -> the target roles allowed
# (GROUP for an action on the group itself). A pair that is not here is not permitted. A
# creator or admin acts on members of a lower role only.
GROUP = None
PERMITTED: dict[tuple[Role, Action], frozenset[Role | None]] = {
    (Role.CREATOR, Action.KICK): frozenset({Role.ADMIN, Role.NORMAL}),
    (Role.ADMIN, Action.KICK): frozenset({Role.NORMAL}),
    (Role.CREATOR, Action.SET_ROLE): frozenset({Role.ADMIN, Role.NORMAL}),
    (Role.CREATOR, Action.TRANSFER): frozenset({Role.ADMIN, Role.NORMAL}),
    (Role.CREATOR, Action.MUTE): frozenset({Role.ADMIN, Role.NORMAL}),
    (Role.ADMIN, Action.MUTE): frozenset({Role.NORMAL}),
    (Role.CREATOR, Action.DISSOLVE): frozenset({GROUP}),
    (Role.CREATOR, Action.UPDATE): frozenset({GROUP}),
    (Role.ADMIN, Action.UPDATE): frozenset({GROUP}),
}
# The roles GROUP_ROLE may give.
ASSIGNABLE_ROLES = frozenset({Role.ADMIN, Role.NORMAL})


def permitted(actor: Role, action: Action, target: Role | None = GROUP) -> bool:
    return target in PERMITTED.get((actor, action), frozenset())


def check_permitted(actor: Role, action: Action, target: Role | None = GROUP) -> None:
    if not permitted(actor, action, target):
        raise NotPermitted()


@frozen
class Group:
    id: int
    name: str
    description: str


@frozen
class Member:
    """A user's place in a group."""

    user: User
    role: Role
    # Muted until this time (ms since the epoch); 0: not muted.
    muted_until: int = 0


def successor(members: Sequence[Member], leaving_id: int) -> Member | None:
    """Who becomes creator when the creator leaves: the admin who joined earliest, else the
    member who joined earliest (members in the order they joined); None if nobody is left."""
    others = [m for m in members if m.user.id != leaving_id]
    admins = [m for m in others if m.role is Role.ADMIN]
    candidates = admins or others
    return candidates[0] if candidates else None


def check_group_name(name: str) -> None:
    """A new group name: 1-50 characters and the rules of chatserver.domain.names."""
    check_display_name(name, field="groupname", max_length=MAX_GROUP_NAME_LENGTH)


def check_group_description(description: str) -> None:
    if len(description) > MAX_GROUP_DESCRIPTION_LENGTH:
        raise InvalidRequest(
            f"groupdesc must be at most {MAX_GROUP_DESCRIPTION_LENGTH} characters"
        )
