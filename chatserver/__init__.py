"""chatserver: a QQ-style instant-messaging server and library.

This module is the public API: what an embedding program needs, covered by semantic versioning
(CHANGELOG.md). Every other module (`chatserver.domain`, `chatserver.application`,
`chatserver.adapters`, `chatserver.entrypoints`) is private, and may change in any release.

    import anyio
    import chatserver

    async def main() -> None:
        async with chatserver.open_node(chatserver.Config(database="memory://")) as node:
            await node.start_serving()          # TCP (and WebSocket) on this loop
            alice = node.connect()              # an in-process client
            user_id = (await alice.request(chatserver.Register("alice", "secret"))).user_id
            await alice.request(chatserver.Login("secret", user_id=user_id))
            ...

    anyio.run(main)
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from chatserver.adapters.memory.cluster import InProcessHub
from chatserver.adapters.tcp.connection import TransportLimits
from chatserver.adapters.webhook import verify as verify_webhook
from chatserver.application.commands import (
    AccountChange,
    AddFriend,
    AnswerFriend,
    BlockUser,
    Command,
    CreateGroup,
    DissolveGroup,
    History,
    JoinGroup,
    KickMember,
    LeaveGroup,
    Login,
    Logout,
    MuteMember,
    Ping,
    Read,
    Receipt,
    Register,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
    SetMemberRole,
    Sync,
    TransferGroup,
    UpdateGroup,
)
from chatserver.application.hooks import (
    AccountCreated,
    AfterEvent,
    Allow,
    Authenticator,
    BeforeSend,
    FriendRemoved,
    FriendRequested,
    GroupFounded,
    HookEvent,
    Hooks,
    Outgoing,
    Reject,
)
from chatserver.application.node import Limits
from chatserver.application.results import (
    Contact,
    Done,
    GroupCreated,
    GroupJoined,
    GroupMemberView,
    GroupView,
    HistoryPage,
    LoggedIn,
    MessageAccepted,
    Registered,
    Result,
    Synced,
)
from chatserver.application.webhooks import WebhookLimits
from chatserver.domain.errors import (
    ChatError,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    Muted,
    NameTaken,
    NotAMember,
    NotLoggedIn,
    NotPermitted,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    UnknownGroup,
    UnknownUser,
)
from chatserver.domain.groups import Group, Role
from chatserver.domain.messages import (
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRemovedNotice,
    FriendRequestNotice,
    GroupEvent,
    GroupMessage,
    Kept,
    KickedNotice,
    PresenceNotice,
    ReadNotice,
)
from chatserver.domain.ports import Clock, PasswordHasher
from chatserver.domain.users import User
from chatserver.entrypoints.bootstrap import (
    ChatApp,
    Config,
    ConfigError,
    EmbeddedClient,
    Listening,
    open_node,
    upgrade_database,
)

try:
    __version__ = _version("chatserver")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AccountChange",
    "AccountCreated",
    "AddFriend",
    "AfterEvent",
    "Allow",
    "AnswerFriend",
    "Authenticator",
    "BeforeSend",
    "BlockUser",
    "ChatApp",
    "ChatError",
    "Clock",
    "Command",
    "Config",
    "ConfigError",
    "Contact",
    "CreateGroup",
    "DirectMessage",
    "DissolveGroup",
    "Done",
    "EmbeddedClient",
    "Event",
    "Forbidden",
    "FriendAnswer",
    "FriendRemoved",
    "FriendRemovedNotice",
    "FriendRequestNotice",
    "FriendRequested",
    "Group",
    "GroupCreated",
    "GroupEvent",
    "GroupFounded",
    "GroupJoined",
    "GroupMemberView",
    "GroupMessage",
    "GroupView",
    "History",
    "HistoryPage",
    "HookEvent",
    "Hooks",
    "InProcessHub",
    "InvalidCredentials",
    "InvalidRequest",
    "JoinGroup",
    "Kept",
    "KickMember",
    "KickedNotice",
    "LeaveGroup",
    "Limits",
    "Listening",
    "LoggedIn",
    "Login",
    "Logout",
    "MessageAccepted",
    "MuteMember",
    "Muted",
    "NameTaken",
    "NotAMember",
    "NotLoggedIn",
    "NotPermitted",
    "Outgoing",
    "PasswordHasher",
    "Ping",
    "PresenceNotice",
    "QuotaExceeded",
    "RateLimited",
    "Read",
    "ReadNotice",
    "Receipt",
    "Register",
    "Registered",
    "Reject",
    "RemoveFriend",
    "Result",
    "Role",
    "SendDirectMessage",
    "SendGroupMessage",
    "SetMemberRole",
    "Sync",
    "Synced",
    "TransferGroup",
    "TransportLimits",
    "Unavailable",
    "UnknownGroup",
    "UnknownUser",
    "UpdateGroup",
    "User",
    "WebhookLimits",
    "__version__",
    "open_node",
    "upgrade_database",
    "verify_webhook",
]
