"""PROTOCOL.md Version 2, "People who can protect themselves": FRIEND_REMOVED_MSG (31),
BLOCK_MSG (30), ACCOUNT_MSG (32)."""

from __future__ import annotations

import time

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


# --------------------------------------------------------------------------- BLOCK


def test_blocking_ends_the_friendship_and_is_listed_at_login(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    assert ca.ack["blocked"] == []
    ack = ca.ok({"msgid": 30, "userid": bob.id, "block": True})
    assert ack["reply_to"] == 30
    ca.expect({"msgid": 31, "id": bob.id})
    # the blocked one learns the friendship ended, not why
    assert cb.expect({"msgid": 31}) == {"msgid": 31, "id": alice.id}
    assert "blocked" not in cb.ack or cb.ack["blocked"] == []
    again = chat.online(alice)
    assert again.ack["blocked"] == [bob.id] and again.ack["friends"] == []
    # bob hears nothing of alice any more: no PRESENCE when she goes (ca was taken over)
    again.logout()
    cb.assert_silent(pattern={"msgid": 14})


def test_a_blocked_users_chat_is_errno_12_and_their_request_reaches_nobody(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 30, "userid": bob.id, "block": True})
    cb.err({"msgid": 6, "toid": alice.id, "msg": "hello?"}, 12)
    # a blocked user's ADD_FRIEND is answered like any that was sent
    carol = chat.users(1)[0]
    normal = cb.ok({"msgid": 7, "friendid": carol.id})
    swallowed = cb.ok({"msgid": 7, "friendid": alice.id})
    assert set(swallowed) == set(normal), (swallowed, normal)
    ca.assert_silent(pattern=lambda f: f["msgid"] in (6, 12))
    assert phone(chat, alice).ack["friend_requests"] == []
    # alice still reaches bob; groups are not affected
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "bye"})
    cb.expect({"msgid": 6, "id": alice.id})
    gid, _ = chat.make_group(ca, cb)
    cb.ok({"msgid": 10, "groupid": gid, "msg": "in the group"})
    ca.expect({"msgid": 10, "groupid": gid, "msg": "in the group"})
    # unblocked: chat again
    ca.ok({"msgid": 30, "userid": bob.id, "block": False})
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "again"})
    ca.expect({"msgid": 6, "msg": "again"})


def test_block_errors(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.err({"msgid": 30, "userid": 2_000_000_000, "block": True}, 4)
    ca.err({"msgid": 30, "userid": alice.id, "block": True}, 7)
    ca.err({"msgid": 30, "userid": bob.id, "block": "yes"}, 7)
    ca.err({"msgid": 30, "userid": bob.id}, 7)


def test_a_block_flood_is_rate_limited_and_a_well_behaved_user_keeps_service(chat):
    alice, bob, carol, dave = chat.users(4)
    ca, cc, cd = chat.online_all(alice, carol, dave)
    refused = 0
    for i in range(50):
        reply = ca.request({"msgid": 30, "userid": bob.id, "block": i % 2 == 0})
        if reply["errno"] == 9:
            refused += 1
        else:
            assert reply["errno"] == 0, reply
    assert refused == 20  # 30 changes a minute
    started = time.perf_counter()
    cc.ok({"msgid": 6, "toid": dave.id, "msg": "still served"})
    cd.expect({"msgid": 6, "msg": "still served"})
    print(f"carol's chat to dave during alice's BLOCK flood: "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")


# --------------------------------------------------------------------------- ACCOUNT


def test_changing_the_password_kicks_the_other_devices_and_the_new_one_works(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    other = phone(chat, alice)
    reply = ca.ok({"msgid": 32, "action": "password", "password": alice.password,
                   "new_password": "a new secret"})
    assert reply["reply_to"] == 32
    other.expect({"msgid": 15})
    ca.ok({"msgid": 16})  # the asking session goes on
    ca.ok({"msgid": 6, "toid": alice.id, "msg": "still logged in"})
    fresh = chat.client()
    old = fresh.request({"msgid": 1, "id": alice.id, "password": alice.password})
    assert old["errno"] == 1, old
    new = fresh.request({"msgid": 1, "id": alice.id, "password": "a new secret",
                         "device": "tablet"})
    assert new["errno"] == 0, new


def test_deleting_the_account_acks_then_logs_out_tells_friends_and_frees_the_name(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    gid, _ = chat.make_group(ca, cb)
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "remember me"})
    cb.expect({"msgid": 6, "msg": "remember me"})
    other = phone(chat, alice)
    ca.err({"msgid": 32, "action": "delete", "password": "wrong"}, 1)
    reply = ca.ok({"msgid": 32, "action": "delete", "password": alice.password})
    assert reply["reply_to"] == 32
    other.expect({"msgid": 15})
    ca.err({"msgid": 6, "toid": bob.id, "msg": "am I gone?"}, 3)  # logged out after the ACK
    assert cb.expect({"msgid": 31}) == {"msgid": 31, "id": alice.id}
    # bob inherits the group (alice was its creator), and the left event says so
    left = cb.expect({"msgid": 29, "groupid": gid, "event": "left"})
    assert left["userid"] == alice.id, left
    cb.err({"msgid": 6, "toid": alice.id, "msg": "hello?"}, 4)
    fresh = chat.client()
    assert fresh.request({"msgid": 1, "id": alice.id, "password": alice.password})["errno"] == 1
    assert chat.register(alice.name, "someone else") != alice.id  # the name is free again
    # what alice sent stays in bob's inbox, under "deleted user"
    synced = cb.ok({"msgid": 20, "since": 0})
    sent = [m for m in synced["msgs"] if m.get("msg") == "remember me"]
    assert sent and sent[0]["name"] == "deleted user", synced


def test_account_errors(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    ca.err({"msgid": 32, "action": "password", "password": "wrong", "new_password": "x2345678"}, 1)
    ca.err({"msgid": 32, "action": "password", "password": alice.password}, 7)
    ca.err({"msgid": 32, "action": "rename", "password": alice.password}, 7)
    ca.err({"msgid": 32, "action": "password", "password": 5, "new_password": "x2345678"}, 7)


def test_password_guessing_through_account_is_throttled_and_others_keep_service(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    errnos = []
    for _ in range(15):
        reply = ca.request({"msgid": 32, "action": "password", "password": "guess",
                            "new_password": "x2345678"}, timeout=30)
        errnos.append(reply["errno"])
        if reply["errno"] == 9:
            break
    assert errnos[-1] == 9 and set(errnos[:-1]) == {1}, errnos
    started = time.perf_counter()
    cb.ok({"msgid": 6, "toid": carol.id, "msg": "still served"})
    cc.expect({"msgid": 6, "msg": "still served"})
    print(f"bob's chat to carol after alice's guesses: "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")
