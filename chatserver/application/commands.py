"""The requests a client can make, free of wire details (no msgid, no JSON field names).

A command with a ``validate()`` checks its own values; that runs before anything else.
"""

from attrs import field, frozen

from chatserver.domain.groups import check_group_description, check_group_name
from chatserver.domain.messages import check_message_text
from chatserver.domain.users import check_name, check_password


@frozen
class Register:
    name: str
    password: str = field(repr=False)

    def validate(self) -> None:
        check_name(self.name)
        check_password(self.password)


@frozen
class Login:
    """Log in by id, or by name when no id is given."""

    password: str = field(repr=False)
    user_id: int | None = None
    name: str | None = None
    receipts: bool = False
    # False for clients of the original server: they take chats only, no notices.
    notices: bool = True


@frozen
class Logout:
    pass


@frozen
class SendDirectMessage:
    recipient_id: int
    text: str

    def validate(self) -> None:
        check_message_text(self.text)


@frozen
class AddFriend:
    friend_id: int


@frozen
class AnswerFriend:
    requester_id: int
    accept: bool


@frozen
class RemoveFriend:
    friend_id: int


@frozen
class CreateGroup:
    name: str
    description: str = ""

    def validate(self) -> None:
        check_group_name(self.name)
        check_group_description(self.description)


@frozen
class JoinGroup:
    group_id: int


@frozen
class LeaveGroup:
    group_id: int


@frozen
class SendGroupMessage:
    group_id: int
    text: str

    def validate(self) -> None:
        check_message_text(self.text)


@frozen
class Ping:
    pass


@frozen
class Receipt:
    msg_ids: tuple[int, ...]


Command = (
    Register
    | Login
    | Logout
    | SendDirectMessage
    | AddFriend
    | AnswerFriend
    | RemoveFriend
    | CreateGroup
    | JoinGroup
    | LeaveGroup
    | SendGroupMessage
    | Ping
    | Receipt
)

# Commands that anyone may send before logging in.
ANONYMOUS_COMMANDS = (Register, Login, Ping)
