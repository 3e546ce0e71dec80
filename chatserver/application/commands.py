"""The requests a client can make, free of wire details (no msgid, no JSON field names).

A command with a ``validate()`` checks its own values; that runs before anything else.
"""

from attrs import field, frozen

from chatserver.domain.errors import InvalidRequest
from chatserver.domain.files import check_file
from chatserver.domain.groups import (
    ASSIGNABLE_ROLES,
    check_group_description,
    check_group_name,
)
from chatserver.domain.messages import check_message_text
from chatserver.domain.users import check_name, check_password

MAX_DEVICE_LENGTH = 64
MAX_TOKEN_LENGTH = 4096
SYNC_LIMIT = 500
SYNC_DEFAULT = 200
HISTORY_LIMIT = 100
HISTORY_DEFAULT = 50
ASSIGNABLE_ROLE_NAMES = frozenset(role.value for role in ASSIGNABLE_ROLES)


@frozen
class Register:
    name: str
    password: str = field(repr=False)

    def validate(self) -> None:
        check_name(self.name)
        check_password(self.password)


@frozen
class Login:
    """Log in by id, or by name when no id is given; or with a token from the embedding
    application (`Config.authenticator`), which names the user."""

    password: str | None = field(default=None, repr=False)
    user_id: int | None = None
    name: str | None = None
    receipts: bool = False
    # False for clients of the original server: they take chats only, no notices.
    notices: bool = True
    # The client program's install; a legacy-dialect client is always "legacy".
    device: str = "default"
    # The device has every pos up to since: what waited for it starts after it.
    since: int | None = None
    # The embedding application's token (PROTOCOL.md Version 2, "Tokens"), instead of password.
    token: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        if self.token is not None and not 1 <= len(self.token) <= MAX_TOKEN_LENGTH:
            raise InvalidRequest(f"token: 1 to {MAX_TOKEN_LENGTH} characters")
        if self.password is None and self.token is None:
            raise InvalidRequest("password: missing")
        if not 1 <= len(self.device) <= MAX_DEVICE_LENGTH:
            raise InvalidRequest(f"device: 1 to {MAX_DEVICE_LENGTH} characters")
        if self.since is not None and self.since < 0:
            raise InvalidRequest("since: must not be negative")


@frozen
class Logout:
    pass


@frozen
class SendDirectMessage:
    recipient_id: int
    text: str
    # A file whose upload completed; the text may then be empty.
    file_id: int | None = None

    def validate(self) -> None:
        if self.file_id is None or self.text:
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
class BlockUser:
    """Block a user (block=True) or unblock them (PROTOCOL.md Version 2, BLOCK_MSG)."""

    user_id: int
    block: bool


@frozen
class AccountChange:
    """ACCOUNT_MSG (PROTOCOL.md Version 2): action "password" changes the password to
    new_password; "delete" deletes the account."""

    action: str
    password: str = field(repr=False)
    new_password: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        if self.action == "password":
            if self.new_password is None:
                raise InvalidRequest("new_password: required to change the password")
            check_password(self.new_password)
        elif self.action != "delete":
            raise InvalidRequest('action: "password" or "delete"')


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
class KickMember:
    group_id: int
    user_id: int


@frozen
class SetMemberRole:
    group_id: int
    user_id: int
    role: str

    def validate(self) -> None:
        if self.role not in ASSIGNABLE_ROLE_NAMES:
            raise InvalidRequest('role: "admin" or "normal"')


@frozen
class TransferGroup:
    group_id: int
    user_id: int


@frozen
class DissolveGroup:
    group_id: int


@frozen
class MuteMember:
    """Mute a member until `until` (ms since the epoch); 0 unmutes."""

    group_id: int
    user_id: int
    until: int

    def validate(self) -> None:
        if self.until < 0:
            raise InvalidRequest("until: must not be negative")


@frozen
class UpdateGroup:
    group_id: int
    name: str | None = None
    description: str | None = None

    def validate(self) -> None:
        if self.name is None and self.description is None:
            raise InvalidRequest("groupname or groupdesc: at least one is required")
        if self.name is not None:
            check_group_name(self.name)
        if self.description is not None:
            check_group_description(self.description)


@frozen
class SendGroupMessage:
    group_id: int
    text: str
    file_id: int | None = None

    def validate(self) -> None:
        if self.file_id is None or self.text:
            check_message_text(self.text)


@frozen
class Ping:
    pass


@frozen
class Receipt:
    msg_ids: tuple[int, ...]


@frozen
class Sync:
    """The user's inbox after since: what a reconnecting client missed."""

    since: int
    limit: int = SYNC_DEFAULT

    def validate(self) -> None:
        if self.since < 0:
            raise InvalidRequest("since: must not be negative")
        if not 1 <= self.limit <= SYNC_LIMIT:
            raise InvalidRequest(f"limit: 1 to {SYNC_LIMIT}")


@frozen
class History:
    """One conversation in the user's inbox, newest page first: with a user or a group."""

    with_user: int | None = None
    group_id: int | None = None
    before: int | None = None
    limit: int = HISTORY_DEFAULT

    def validate(self) -> None:
        if (self.with_user is None) == (self.group_id is None):
            raise InvalidRequest("with or groupid: exactly one of them is required")
        if self.before is not None and self.before < 0:
            raise InvalidRequest("before: must not be negative")
        if not 1 <= self.limit <= HISTORY_LIMIT:
            raise InvalidRequest(f"limit: 1 to {HISTORY_LIMIT}")


@frozen
class Read:
    """The user has read everything up to pos."""

    pos: int

    def validate(self) -> None:
        if self.pos < 0:
            raise InvalidRequest("pos: must not be negative")


@frozen
class UploadFile:
    """Ask to upload a file: the answer is where to PUT its bytes."""

    name: str
    size: int
    mime: str

    def validate(self) -> None:
        check_file(self.name, self.size, self.mime)


@frozen
class FileUrl:
    """Ask where to download a file one sent or received."""

    file_id: int


Command = (
    Register
    | Login
    | Logout
    | SendDirectMessage
    | AddFriend
    | AnswerFriend
    | RemoveFriend
    | BlockUser
    | AccountChange
    | CreateGroup
    | JoinGroup
    | LeaveGroup
    | SendGroupMessage
    | KickMember
    | SetMemberRole
    | TransferGroup
    | DissolveGroup
    | MuteMember
    | UpdateGroup
    | Ping
    | Receipt
    | Sync
    | History
    | Read
    | UploadFile
    | FileUrl
)

# Commands that anyone may send before logging in.
ANONYMOUS_COMMANDS = (Register, Login, Ping)
