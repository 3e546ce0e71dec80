"""PROTOCOL.md Version 2, "People who can protect themselves": FRIEND_REMOVED_MSG (31),
BLOCK_MSG (30), ACCOUNT_MSG (32)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def phone(chat, user):
    """A second device of `user`, logged in (Version 2 devices)."""
    c = chat.client()
    c.login(user, device="phone")
    return c


# --------------------------------------------------------------------------- FRIEND_REMOVED


def test_remove_friend_tells_both_users_on_every_device(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    ca2, cb2 = phone(chat, alice), phone(chat, bob)
    ca.ok({"msgid": 18, "friendid": bob.id})
    for client, other in ((ca, bob), (ca2, bob), (cb, alice), (cb2, alice)):
        told = client.expect({"msgid": 31})
        assert told == {"msgid": 31, "id": other.id}, told


def test_removing_a_stranger_sends_no_friend_removed(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 18, "friendid": bob.id})
    ca.assert_silent(pattern={"msgid": 31})
    cb.assert_silent(pattern={"msgid": 31})


def test_a_legacy_session_is_not_sent_friend_removed(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    cb.logout()
    old = chat.online(bob, legacy=True)
    ca.ok({"msgid": 18, "friendid": bob.id})
    ca.expect({"msgid": 31, "id": bob.id})
    old.assert_silent(pattern={"msgid": 31})
