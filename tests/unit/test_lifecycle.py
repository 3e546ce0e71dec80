"""A session's life (application.lifecycle): what reaches a new session before its LOGIN's
reply is out waits for it (the hook after LOGIN, Connection.replied), and nothing else needs
the hook; a takeover ends the device's older session."""

import pytest

from chatserver.application.commands import AddFriend, AnswerFriend, Login, Ping, SendDirectMessage
from chatserver.application.results import LoggedIn
from chatserver.domain.messages import DirectMessage, Kept, KickedNotice, PresenceNotice
from chatserver.entrypoints.bootstrap import ChatApp
from tests.unit.test_use_cases import online, register

pytestmark = pytest.mark.anyio


async def test_what_arrives_before_the_login_reply_waits_for_the_hook_and_only_for_it(
    chat: ChatApp,
) -> None:
    alice, bob = await register(chat, "alice"), await register(chat, "bob")
    sender = await online(chat, bob)
    await sender.request(AddFriend(alice))
    client = chat.connect()
    # LOGIN served, its reply not yet out (Connection.replied not called): pushes wait.
    result = await client.connection.handle(Login("pw", user_id=alice))
    assert isinstance(result, LoggedIn)
    await sender.request(SendDirectMessage(alice, "before the reply"))
    assert client.outbox.events == []
    client.connection.replied()
    first = client.outbox.events.pop(0)
    assert isinstance(first, Kept) and isinstance(first.delivery, DirectMessage)
    assert first.delivery.text == "before the reply"
    # From here on, no other request calls the hook: pushes go out at once.
    await client.connection.handle(Ping())
    await sender.request(SendDirectMessage(alice, "after a ping"))
    second = client.outbox.events.pop(0)
    assert isinstance(second, Kept) and isinstance(second.delivery, DirectMessage)
    assert second.delivery.text == "after a ping"
    # A friend's presence, after the answer, needs no hook either.
    await client.connection.handle(AnswerFriend(bob, accept=True))
    assert PresenceNotice(bob, True) in client.outbox.events


async def test_a_login_on_the_same_device_takes_the_older_session_over(chat: ChatApp) -> None:
    alice = await register(chat, "alice")
    older = await online(chat, alice)
    newer = await online(chat, alice)
    assert isinstance(await older.next_event(), KickedNotice)
    assert older.connection.session is None or older.connection.session.ended
    assert not older.connection.logged_in
    assert newer.connection.logged_in
    assert [s.device for s in chat.node.sessions.of(alice).values()] == ["default"]
    assert chat.node.sessions.get(alice, "default") is newer.connection.session
