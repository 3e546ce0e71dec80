"""Friends (requests, answers, removal), the friends list, and PRESENCE_MSG."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration

UNKNOWN_ID = 2_000_000_000


def friend_ids(ack: dict) -> list[int]:
    return sorted(f["id"] for f in ack["friends"])


def responses(ack: dict) -> list[dict]:
    return [m for m in ack["offlinemsg"] if m["msgid"] == 13]


# --------------------------------------------------------------------------- requests


def test_friend_request_reaches_an_online_user_now(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    reply = ca.ok({"msgid": 7, "friendid": bob.id})
    assert reply["reply_to"] == 7
    req = cb.expect({"msgid": 12})
    assert req["id"] == alice.id and req["name"] == alice.name, req
    ca.assert_silent(pattern=lambda f: f["msgid"] in (12, 13))
    # not yet friends, and the request keeps waiting for bob's answer
    again = chat.online(bob)
    assert again.ack["friends"] == []
    assert again.ack["friend_requests"] == [{"id": alice.id, "name": alice.name}]


def test_friend_request_to_an_offline_user_waits_for_the_next_login(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb = chat.online(bob)
    assert cb.ack["friend_requests"] == [{"id": alice.id, "name": alice.name}]
    assert cb.ack["friends"] == []
    assert cb.ack["offlinemsg"] == []
    cb.assert_silent(pattern={"msgid": 12})


def test_accepting_makes_both_friends_and_tells_the_requester_live(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    reply = cb.ok({"msgid": 13, "friendid": alice.id, "accept": True})
    assert reply["reply_to"] == 13
    told = ca.expect({"msgid": 13})
    assert told["id"] == bob.id and told["name"] == bob.name and told["accept"] is True, told
    assert type(told["msg_id"]) is int and told["msg_id"] > 0

    # A friendship starts: each side is told the other's current state.
    ca.expect({"msgid": 14, "id": bob.id, "state": "online"})
    cb.expect({"msgid": 14, "id": alice.id, "state": "online"})
    a2 = chat.online(alice)
    assert a2.ack["friends"] == [{"id": bob.id, "name": bob.name, "state": "online"}]
    assert a2.ack["offlinemsg"] == []  # it was delivered live
    b2 = chat.online(bob)
    assert b2.ack["friends"] == [{"id": alice.id, "name": alice.name, "state": "online"}]
    assert b2.ack["friend_requests"] == []


def test_declining_drops_the_request_and_tells_the_requester(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": False})
    told = ca.expect({"msgid": 13, "id": bob.id})
    assert told["accept"] is False and told["name"] == bob.name and told["msg_id"] > 0, told
    # already answered
    cb.err({"msgid": 13, "friendid": alice.id, "accept": True}, 4)
    b2 = chat.online(bob)
    assert b2.ack["friends"] == [] and b2.ack["friend_requests"] == []
    a2 = chat.online(alice)
    assert a2.ack["friends"] == []


def test_a_declined_requester_asking_again_the_same_day_is_errno_9(chat):
    # Issue 13.4: once a day, so friend requests cannot be used to pester.
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": False})
    ca.expect({"msgid": 13, "id": bob.id, "accept": False})
    started = time.perf_counter()
    for _ in range(20):
        reply = ca.err({"msgid": 7, "friendid": bob.id}, 9)
        assert "declined" in reply["errmsg"], reply
    pester_ms = (time.perf_counter() - started) * 1000
    cb.assert_silent(pattern={"msgid": 12})
    # a well-behaved user still reaches bob, and bob may still ask alice himself
    started = time.perf_counter()
    cc.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": carol.id})
    print(
        f"\n20 pestering requests refused in {pester_ms:.1f} ms; carol's request reached bob"
        f" in {(time.perf_counter() - started) * 1000:.1f} ms"
    )
    cb.ok({"msgid": 7, "friendid": alice.id})
    ca.expect({"msgid": 12, "id": bob.id})
    # nothing of alice's waits for bob either
    assert chat.online(bob).ack["friend_requests"] == [{"id": carol.id, "name": carol.name}]


@pytest.mark.parametrize("accept", [True, False])
def test_an_offline_requester_is_told_in_offlinemsg(chat, accept):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    ca.logout()
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": accept})
    ca.assert_silent(pattern={"msgid": 13})

    a2 = chat.online(alice)
    stored = responses(a2.ack)
    assert len(stored) == 1, a2.ack
    assert stored[0]["id"] == bob.id and stored[0]["name"] == bob.name
    assert stored[0]["accept"] is accept and stored[0]["msg_id"] > 0
    assert friend_ids(a2.ack) == ([bob.id] if accept else [])
    if accept:
        assert a2.ack["friends"][0]["state"] == "online"
    a2.logout()
    # delivered once to a session without receipts: gone
    a2.login(alice)
    assert responses(a2.ack) == []


def test_a_mutual_request_accepts_and_tells_the_other(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    cb.ok({"msgid": 7, "friendid": alice.id})
    told = ca.expect({"msgid": 13, "id": bob.id})
    assert told["accept"] is True and told["name"] == bob.name and told["msg_id"] > 0, told
    ca.assert_silent(pattern={"msgid": 12})
    # the request is gone: there is nothing left to answer
    cb.err({"msgid": 13, "friendid": alice.id, "accept": True}, 4)
    a2, b2 = chat.online_all(alice, bob)
    assert friend_ids(a2.ack) == [bob.id] and friend_ids(b2.ack) == [alice.id]
    assert a2.ack["friend_requests"] == [] and b2.ack["friend_requests"] == []


def test_a_mutual_request_while_the_first_asker_is_offline(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 7, "friendid": bob.id})
    ca.logout()
    cb = chat.online(bob)
    assert cb.ack["friend_requests"] == [{"id": alice.id, "name": alice.name}]
    cb.ok({"msgid": 7, "friendid": alice.id})
    a2 = chat.online(alice)
    stored = responses(a2.ack)
    assert [(m["id"], m["accept"]) for m in stored] == [(bob.id, True)], a2.ack
    assert friend_ids(a2.ack) == [bob.id]
    assert a2.ack["friend_requests"] == []


def test_friend_request_to_oneself_is_errno_7(chat):
    alice = chat.user()
    ca = chat.online(alice)
    ca.err({"msgid": 7, "friendid": alice.id}, 7)
    ca.assert_silent(pattern={"msgid": 12})


def test_friend_request_to_an_unknown_user_is_errno_4(chat):
    ca = chat.online(chat.user())
    ca.err({"msgid": 7, "friendid": UNKNOWN_ID}, 4)


def test_friend_request_to_a_friend_is_errno_0_and_changes_nothing(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.ok({"msgid": 7, "friendid": alice.id})
    cb.assert_silent(pattern=lambda f: f["msgid"] in (12, 13))
    ca.assert_silent(pattern=lambda f: f["msgid"] in (12, 13))
    a2, b2 = chat.online_all(alice, bob)
    assert a2.ack["friends"] == [{"id": bob.id, "name": bob.name, "state": "online"}]
    assert b2.ack["friends"] == [{"id": alice.id, "name": alice.name, "state": "online"}]
    assert a2.ack["friend_requests"] == [] and b2.ack["friend_requests"] == []


def test_answering_a_request_that_does_not_exist_is_errno_4(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.err({"msgid": 13, "friendid": bob.id, "accept": True}, 4)
    ca.err({"msgid": 13, "friendid": UNKNOWN_ID, "accept": False}, 4)
    # the requester cannot answer its own request
    ca.ok({"msgid": 7, "friendid": bob.id})
    ca.err({"msgid": 13, "friendid": bob.id, "accept": True}, 4)
    cb.expect({"msgid": 12, "id": alice.id})
    b2 = chat.online(bob)
    assert b2.ack["friends"] == [] and b2.ack["friend_requests"] == [
        {"id": alice.id, "name": alice.name}
    ]


def test_answering_oneself_is_errno_7(chat):
    alice = chat.user()
    ca = chat.online(alice)
    ca.err({"msgid": 13, "friendid": alice.id, "accept": True}, 7)


# --------------------------------------------------------------------------- removal


def test_remove_friend_ends_the_friendship_on_both_sides(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    reply = ca.ok({"msgid": 18, "friendid": bob.id})
    assert reply["reply_to"] == 18
    # no longer friends: no PRESENCE either way
    cb.logout()
    ca.assert_silent(pattern={"msgid": 14})
    a2 = chat.online(alice)
    assert a2.ack["friends"] == []
    cb.login(bob)
    assert cb.ack["friends"] == []
    a2.assert_silent(pattern={"msgid": 14})
    # removing again: there is no friendship, errno 0
    cb.ok({"msgid": 18, "friendid": alice.id})
    # and they can become friends again
    chat.befriend(a2, cb)


def test_remove_friend_of_an_unknown_user_is_errno_4_and_of_a_stranger_errno_0(chat):
    alice, stranger = chat.users(2)
    ca = chat.online(alice)
    ca.err({"msgid": 18, "friendid": UNKNOWN_ID}, 4)
    ca.ok({"msgid": 18, "friendid": stranger.id})


# ------------------------------------------------------------------ friends list & presence


def test_friends_list_in_the_login_ack_carries_state(chat):
    alice, bob, carol, dave = chat.users(4)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    chat.befriend(ca, cb)
    chat.befriend(cc, ca)
    cc.logout()
    a2 = chat.online(alice)
    friends = sorted(a2.ack["friends"], key=lambda f: f["id"])
    assert friends == sorted(
        [
            {"id": bob.id, "name": bob.name, "state": "online"},
            {"id": carol.id, "name": carol.name, "state": "offline"},
        ],
        key=lambda f: f["id"],
    )
    assert dave.id not in friend_ids(a2.ack)


def test_presence_on_login_logout_and_connection_drop(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    chat.befriend(ca, cb)

    ca.logout()
    p = cb.expect({"msgid": 14, "id": alice.id})
    assert p["state"] == "offline", p
    ca.login(alice)
    p = cb.expect({"msgid": 14, "id": alice.id})
    assert p["state"] == "online", p

    ca.close()  # dropped connection
    p = cb.expect({"msgid": 14, "id": alice.id})
    assert p["state"] == "offline", p

    a2 = chat.online(alice)
    cb.expect({"msgid": 14, "id": alice.id, "state": "online"})
    # a user who is not a friend hears nothing
    cc.assert_silent(pattern={"msgid": 14})
    # bob's own comings and goings reach alice
    cb.logout()
    a2.expect({"msgid": 14, "id": bob.id, "state": "offline"})
    cb.assert_silent(pattern={"msgid": 14})


def test_presence_reaches_every_online_friend_only(chat):
    alice, bob, carol, dave = chat.users(4)
    ca, cb, cc, cd = chat.online_all(alice, bob, carol, dave)
    chat.befriend(ca, cb)
    chat.befriend(cc, ca)
    ca.logout()
    cb.expect({"msgid": 14, "id": alice.id, "state": "offline"})
    cc.expect({"msgid": 14, "id": alice.id, "state": "offline"})
    cd.assert_silent(pattern={"msgid": 14})


def test_stored_friend_response_follows_receipt_rules(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    ca.logout()
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": True})

    ca.login(alice, receipts=True)
    first = responses(ca.ack)
    assert len(first) == 1, ca.ack
    ca.logout()
    ca.login(alice, receipts=True)
    again = responses(ca.ack)
    assert [m["msg_id"] for m in again] == [first[0]["msg_id"]]  # comes again until receipted
    ca.ok({"msgid": 19, "msg_ids": [first[0]["msg_id"]]})
    ca.logout()
    ca.login(alice, receipts=True)
    assert responses(ca.ack) == []


def test_live_friend_response_to_a_receipts_session_is_kept_until_receipted(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice, receipts=True)
    cb = chat.online(bob)
    ca.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": alice.id})
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": False})
    live = ca.expect({"msgid": 13, "id": bob.id})
    ca.logout()  # not receipted: stored for the next login
    ca.login(alice, receipts=True)
    assert [(m["msg_id"], m["accept"]) for m in responses(ca.ack)] == [(live["msg_id"], False)]
    ca.ok({"msgid": 19, "msg_ids": [live["msg_id"]]})
    ca.logout()
    ca.login(alice, receipts=True)
    assert responses(ca.ack) == []


def test_a_friendship_started_by_crossing_requests_tells_both_states(chat):
    alice, bob, carol = chat.users(3)
    ca = chat.online(alice)
    ca.ok({"msgid": 7, "friendid": bob.id})
    ca.logout()
    cb = chat.online(bob)
    cb.ok({"msgid": 7, "friendid": alice.id})  # crossing: the friendship starts now
    cb.expect({"msgid": 14, "id": alice.id, "state": "offline"})
    # a third user's request and answer tell nobody else anything
    cc = chat.online(carol)
    cc.ok({"msgid": 7, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": carol.id})
    cb.ok({"msgid": 13, "friendid": carol.id, "accept": False})
    cb.assert_silent(pattern={"msgid": 14})
    cc.assert_silent(pattern={"msgid": 14})
