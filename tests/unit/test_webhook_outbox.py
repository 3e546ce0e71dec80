"""Issue 17 item 5: every event bound for the webhook is written to the outbox in the transaction
of the change that made it (memory unit of work): a transaction that fails leaves no row, and
each kind of event has its row once its use case returns."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from chatserver import (
    AddFriend,
    AnswerFriend,
    Config,
    CreateGroup,
    EmbeddedClient,
    GroupCreated,
    Login,
    NotPermitted,
    Register,
    Registered,
    RemoveFriend,
    open_node,
)
from chatserver.adapters.memory.unit_of_work import MemoryUnitOfWork
from chatserver.application.accounts import TOKEN_ONLY_HASH
from chatserver.application.commands import BlockUser
from chatserver.application.hooks import AccountCreated
from chatserver.domain.ports import Transaction
from chatserver.entrypoints.bootstrap import ChatApp
from tests.unit.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app() -> AsyncIterator[ChatApp]:
    # Nothing listens on port 9 here: every POST fails and the rows stay in the outbox.
    config = Config(database="memory://", webhook="http://127.0.0.1:9/", webhook_secret="s")
    async with open_node(config, hasher=FAST_HASHER) as app:
        yield app


def outbox(app: ChatApp) -> list[dict[str, object]]:
    uow = app.node.uow
    assert isinstance(uow, MemoryUnitOfWork)
    return [orjson.loads(body) for _, body, _ in uow.database.webhooks.values()]


async def register(client: EmbeddedClient, name: str) -> int:
    registered = await client.request(Register(name, "secret"))
    assert isinstance(registered, Registered)
    return registered.user_id


def kinds(app: ChatApp) -> list[object]:
    return [row["type"] for row in outbox(app)]


async def test_a_transaction_that_fails_after_its_change_leaves_no_outbox_row(
    app: ChatApp,
) -> None:
    node = app.node

    def work(tx: Transaction) -> None:
        user = tx.users.add("dave", TOKEN_ONLY_HASH)
        node.record(tx, AccountCreated(user))
        raise RuntimeError("the commit never happens")

    with pytest.raises(RuntimeError):
        await node.uow.run(work)
    assert outbox(app) == []
    assert await node.uow.run(lambda tx: tx.users.account_by_name("dave")) is None


async def test_a_use_case_refused_after_recording_leaves_no_outbox_row(app: ChatApp) -> None:
    a, b = app.connect(), app.connect()
    ida = await register(a, "alice")
    idb = await register(b, "bob")
    await a.request(Login("secret", user_id=ida))
    await a.request(BlockUser(idb, True))
    before = kinds(app)
    with pytest.raises(NotPermitted):  # alice blocks bob: her request is refused
        await a.request(AddFriend(idb))
    assert kinds(app) == before


async def test_each_kind_of_event_is_in_the_outbox_when_its_use_case_returns(
    app: ChatApp,
) -> None:
    a, b = app.connect(), app.connect()
    ida = await register(a, "alice")
    assert kinds(app) == ["account_created"]
    idb = await register(b, "bob")
    await a.request(Login("secret", user_id=ida))
    await b.request(Login("secret", user_id=idb))
    await a.request(AddFriend(idb))
    assert kinds(app)[-1] == "friend_requested"
    await b.request(AnswerFriend(ida, True))
    assert kinds(app)[-1] == "friend_answer"
    await b.request(RemoveFriend(ida))
    assert kinds(app)[-1] == "friend_removed"
    created = await a.request(CreateGroup("g"))
    assert isinstance(created, GroupCreated)
    group_id = created.group_id
    assert outbox(app)[-1] == {
        "event_id": outbox(app)[-1]["event_id"],
        "type": "group_founded",
        "data": {"group_id": group_id, "creator_id": ida, "name": "g"},
    }
    await app.add_member(group_id, idb)  # returns once the GROUP_EVENT is kept
    assert kinds(app)[-1] == "group_event"
    user = await app.create_user("carol")
    assert outbox(app)[-1]["data"] == {"user_id": user.id, "name": "carol"}
    assert kinds(app) == [
        "account_created",
        "account_created",
        "friend_requested",
        "friend_answer",
        "friend_removed",
        "group_founded",
        "group_event",
        "account_created",
    ]
    ids = [row["event_id"] for row in outbox(app)]
    assert len(set(ids)) == len(ids)
