"""Dispatch is data: one table from command type to the use case that serves it.

Bootstrap hands HANDLERS to the node (Node.handlers), where each Connection finds them:
nothing in the application imports this module, so the connection imports no use case."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatserver.application import (
    account_changes,
    accounts,
    chat,
    files,
    friends,
    groups,
    history,
)
from chatserver.application.commands import (
    AccountChange,
    AddFriend,
    AnswerFriend,
    BlockUser,
    CreateGroup,
    DissolveGroup,
    FileUrl,
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
    UploadFile,
)
from chatserver.application.handling import Handlers, JoiningUseCase, UseCase
from chatserver.application.results import Done

if TYPE_CHECKING:
    from chatserver.application.connection import Connection


async def ping(command: Ping, *, connection: Connection) -> Done:
    return Done()


USE_CASES: dict[type[Any], UseCase] = {
    Register: accounts.register,
    Login: accounts.login,
    Logout: accounts.logout,
    Ping: ping,
    SendDirectMessage: chat.send_direct_message,
    SendGroupMessage: chat.send_group_message,
    Receipt: chat.receipt,
    AddFriend: friends.add_friend,
    AnswerFriend: friends.answer_friend,
    RemoveFriend: friends.remove_friend,
    BlockUser: friends.block_user,
    AccountChange: account_changes.change_account,
    CreateGroup: groups.create_group,
    JoinGroup: groups.join_group,
    LeaveGroup: groups.leave_group,
    KickMember: groups.kick_member,
    SetMemberRole: groups.set_member_role,
    TransferGroup: groups.transfer_group,
    DissolveGroup: groups.dissolve_group,
    MuteMember: groups.mute_member,
    UpdateGroup: groups.update_group,
    Sync: history.sync,
    History: history.history,
    Read: history.read,
    UploadFile: files.upload_file,
    FileUrl: files.file_url,
}

# Use cases that can serve a command without a coroutine of their own, by joining the inbox
# batch being gathered (Connection.handle_joining); they return False when they cannot.
JOINING: dict[type[Any], JoiningUseCase] = {
    SendDirectMessage: chat.send_direct_message_joining,
}

HANDLERS = Handlers(USE_CASES, JOINING)
