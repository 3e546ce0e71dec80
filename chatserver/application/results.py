"""What a successful request returns, for the transport to turn into a reply."""

from attrs import frozen

from chatserver.domain.groups import Group, Role
from chatserver.domain.messages import Kept
from chatserver.domain.users import User


@frozen
class Done:
    """Success with nothing more to say."""


@frozen
class Registered:
    user_id: int


@frozen
class MessageAccepted:
    """The server has taken responsibility for the message, except for not_stored: group
    members who are away and whose stored messages are at the limit."""

    msg_id: int
    not_stored: tuple[int, ...] = ()
    # Its pos in the sender's own inbox (0 where nothing is kept).
    pos: int = 0


@frozen
class GroupCreated:
    group_id: int


@frozen
class Contact:
    user: User
    online: bool


@frozen
class GroupMemberView:
    user: User
    role: Role
    online: bool


@frozen
class GroupView:
    group: Group
    members: tuple[GroupMemberView, ...]


@frozen
class GroupJoined:
    """ADD_GROUP's answer: the group as LOGIN_MSG_ACK lists it."""

    view: GroupView


@frozen
class LoggedIn:
    user: User
    friends: tuple[Contact, ...]
    groups: tuple[GroupView, ...]
    waiting: tuple[Kept, ...]
    friend_requests: tuple[User, ...]
    last_pos: int = 0
    read_pos: int = 0
    # The users this user blocks (BLOCK_MSG).
    blocked: tuple[int, ...] = ()


@frozen
class Synced:
    msgs: tuple[Kept, ...]
    last_pos: int
    truncated: bool


@frozen
class HistoryPage:
    msgs: tuple[Kept, ...]
    more: bool


@frozen
class UploadGranted:
    """Where to PUT the file's bytes (a path on the web port, signed, for a while)."""

    file_id: int
    upload_url: str


@frozen
class DownloadGranted:
    url: str


Result = (
    Done
    | Registered
    | MessageAccepted
    | GroupCreated
    | GroupJoined
    | LoggedIn
    | Synced
    | HistoryPage
    | UploadGranted
    | DownloadGranted
)
