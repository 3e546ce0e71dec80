"""The in-memory unit of work: transactions that run on the event loop and undo themselves."""

from collections.abc import Callable
from typing import TypeVar

from anyio.lowlevel import checkpoint

from chatserver.adapters.memory.repositories import (
    MemoryDatabase,
    MemoryFileRepository,
    MemoryFriendRepository,
    MemoryGroupRepository,
    MemoryInbox,
    MemoryMessageIdSequence,
    MemoryUserRepository,
    MemoryWebhookOutbox,
    UndoLog,
)
from chatserver.domain.ports import (
    FileRepository,
    FriendRepository,
    GroupRepository,
    Inbox,
    MessageIdSequence,
    Transaction,
    UserRepository,
    WebhookOutbox,
)

T = TypeVar("T")


class MemoryTransaction:
    """The repositories of one transaction, all writing through the same undo log."""

    def __init__(self, log: UndoLog) -> None:
        self.users: UserRepository = MemoryUserRepository(log)
        self.friends: FriendRepository = MemoryFriendRepository(log)
        self.groups: GroupRepository = MemoryGroupRepository(log)
        self.inbox: Inbox = MemoryInbox(log)
        self.message_ids: MessageIdSequence = MemoryMessageIdSequence(log)
        self.webhooks: WebhookOutbox = MemoryWebhookOutbox(log)
        self.files: FileRepository = MemoryFileRepository(log)


class MemoryUnitOfWork:
    """Keeps everything in this process; work never pauses, so no two transactions overlap."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self.database = MemoryDatabase() if database is None else database

    async def run(self, work: Callable[[Transaction], T]) -> T:
        await checkpoint()
        log = UndoLog(self.database)
        try:
            return work(MemoryTransaction(log))
        except BaseException:
            log.undo()
            raise

    async def aclose(self) -> None:
        pass
