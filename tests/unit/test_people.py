"""PROTOCOL.md Version 2, "People who can protect themselves": FRIEND_REMOVED, BLOCK, ACCOUNT,
on the in-memory node."""

import pytest

from chatserver.application.commands import AddFriend, AnswerFriend, Login, RemoveFriend
from chatserver.application.results import LoggedIn
from chatserver.domain.messages import FriendRemovedNotice
from chatserver.entrypoints.bootstrap import ChatApp, EmbeddedClient
from tests.unit.test_use_cases import online, register, unwrap

pytestmark = pytest.mark.anyio


async def befriend(a: EmbeddedClient, b: EmbeddedClient, b_id: int, a_id: int) -> None:
    await a.request(AddFriend(b_id))
    await b.request(AnswerFriend(a_id, accept=True))
    a.outbox.events.clear()
    b.outbox.events.clear()


async def device(chat: ChatApp, user_id: int, name: str) -> EmbeddedClient:
    client = chat.connect()
    assert isinstance(await client.request(Login("pw", user_id=user_id, device=name)), LoggedIn)
    return client


async def test_remove_friend_tells_both_users_every_device(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await befriend(a, b, bob, alice)
    a_phone = await device(chat, alice, "phone")
    b_phone = await device(chat, bob, "phone")
    await a.request(RemoveFriend(bob))
    for client, other in ((a, bob), (a_phone, bob), (b, alice), (b_phone, alice)):
        assert unwrap(await client.next_event()) == FriendRemovedNotice(other)


async def test_removing_a_stranger_tells_nobody(chat: ChatApp) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    a, b = await online(chat, alice), await online(chat, bob)
    await a.request(RemoveFriend(bob))
    await a.outbox.flush()
    await b.outbox.flush()
    assert a.outbox.events == [] and b.outbox.events == []
