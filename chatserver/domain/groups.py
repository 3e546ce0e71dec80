"""Groups, their members and roles, and the rules for names and descriptions."""

import enum

from attrs import frozen

from chatserver.domain.errors import InvalidRequest
from chatserver.domain.users import User

MAX_GROUP_NAME_LENGTH = 50
MAX_GROUP_DESCRIPTION_LENGTH = 200


class Role(enum.Enum):
    CREATOR = "creator"
    NORMAL = "normal"


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


def check_group_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_GROUP_NAME_LENGTH:
        raise InvalidRequest(f"groupname must be 1 to {MAX_GROUP_NAME_LENGTH} characters")


def check_group_description(description: str) -> None:
    if len(description) > MAX_GROUP_DESCRIPTION_LENGTH:
        raise InvalidRequest(
            f"groupdesc must be at most {MAX_GROUP_DESCRIPTION_LENGTH} characters"
        )
