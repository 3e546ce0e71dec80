"""The NUL-terminated legacy dialect (clients of the original C++ server); restarts on SQLite."""

from __future__ import annotations

import json
import time
import uuid

import pytest

pytestmark = pytest.mark.integration

INVALID_LOGIN = "id or password is invalid!"
LIST_KEYS = ("friends", "groups", "offlinemsg", "friend_requests")


def original_time() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def legacy_chat(conn, toid: int, msg: str) -> None:
    """ONE_CHAT the way the original client builds it: own id and name, and a client time."""
    assert conn.user is not None
    conn.send(
        {
            "msgid": 6,
            "id": conn.user.id,
            "name": conn.user.name,
            "toid": toid,
            "msg": msg,
            "time": original_time(),
        }
    )


def legacy_group_chat(conn, groupid: int, msg: str) -> None:
    assert conn.user is not None
    conn.send(
        {
            "msgid": 10,
            "id": conn.user.id,
            "name": conn.user.name,
            "groupid": groupid,
            "msg": msg,
            "time": original_time(),
        }
    )


def barrier(conn) -> None:
    """Wait until the server has handled everything sent so far on a legacy connection.

    Legacy connections get replies only to LOGIN and REG; frames are handled in order, so the
    reply to a REG of a taken name means every earlier frame was handled.
    """
    assert conn.user is not None
    conn.send({"msgid": 4, "name": conn.user.name, "password": "x"})
    reply = conn.expect({"msgid": 5})
    assert reply["errno"] != 0, reply


def decode_all(items: list) -> list[dict]:
    assert all(isinstance(i, str) for i in items), items
    return [json.loads(i) for i in items]


# --------------------------------------------------------------------------- replies


def test_legacy_register_gets_a_reply(chat):
    c = chat.client(legacy=True)
    name = f"legacy-{uuid.uuid4().hex[:12]}"
    reply = c.request({"msgid": 4, "name": name, "password": "pwA"})
    assert reply["msgid"] == 5 and reply["errno"] == 0 and reply["id"] > 0, reply
    dup = c.request({"msgid": 4, "name": name, "password": "other"})
    assert dup["msgid"] == 5 and dup["errno"] == 1, dup
    bad = c.request({"msgid": 4, "name": 5, "password": "x"})
    assert bad["msgid"] == 5 and bad["errno"] == 7, bad


def test_legacy_login_failure_uses_the_original_message(chat):
    user = chat.user()
    c = chat.client(legacy=True)
    reply = c.request({"msgid": 1, "id": user.id, "password": "wrong"})
    assert reply["msgid"] == 2 and reply["errno"] == 1, reply
    assert reply["errmsg"] == INVALID_LOGIN


def test_legacy_login_of_a_new_user_leaves_out_every_list(chat):
    user = chat.user()
    c = chat.online(user, legacy=True)
    assert c.ack["id"] == user.id and c.ack["name"] == user.name
    for key in LIST_KEYS:
        assert key not in c.ack, c.ack


def test_legacy_connection_gets_no_reply_to_anything_but_login_and_reg(chat):
    luser, bob, carol = chat.users(3)
    cb, cc = chat.online_all(bob, carol)
    cl = chat.online(luser, legacy=True)
    group_name = f"lgrp-{uuid.uuid4().hex[:10]}"
    cl.send({"msgid": 16})
    cl.send({"msgid": 99, "id": luser.id})
    cl.send_raw(b"{this is not json\0")
    legacy_chat(cl, bob.id, "no ack for me")
    cl.send({"msgid": 6, "id": luser.id, "toid": 2_000_000_000, "msg": "nobody"})
    cl.send({"msgid": 7, "id": luser.id, "friendid": carol.id})
    cl.send({"msgid": 8, "id": luser.id, "groupname": group_name, "groupdesc": "made by legacy"})
    cl.send({"msgid": 13, "friendid": bob.id, "accept": True})
    cl.send({"msgid": 19, "msg_ids": [1]})
    cl.send({"msgid": 3, "id": luser.id})
    cl.send({"msgid": 3, "id": luser.id})  # not logged in any more: errno 3, silently
    cl.assert_silent(0.8)
    # ... but the requests did their work
    got = cb.expect({"msgid": 6, "msg": "no ack for me"})
    assert got["id"] == luser.id and got["name"] == luser.name
    cc.expect({"msgid": 12, "id": luser.id})
    ack = cl.request({"msgid": 1, "id": luser.id, "password": luser.password})
    assert ack["errno"] == 0
    groups = decode_all(ack["groups"])
    assert [(g["groupname"], g["groupdesc"]) for g in groups] == [(group_name, "made by legacy")]
    (member,) = decode_all(groups[0]["users"])
    assert member == {"id": luser.id, "name": luser.name, "state": "online", "role": "creator"}


def test_a_declined_legacy_requester_asking_again_reaches_nobody(chat):
    # Issue 13.4: the errno 9 reply is not sent to a legacy session (it gets none but to LOGIN
    # and REG); the request reaches nobody, and the connection goes on.
    luser, bob = chat.users(2)
    cb = chat.online(bob)
    cl = chat.online(luser, legacy=True)
    cl.send({"msgid": 7, "id": luser.id, "friendid": bob.id})
    cb.expect({"msgid": 12, "id": luser.id})
    cb.ok({"msgid": 13, "friendid": luser.id, "accept": False})
    cl.send({"msgid": 7, "id": luser.id, "friendid": bob.id})
    cl.assert_silent(0.5)
    cb.assert_silent(pattern={"msgid": 12})
    legacy_chat(cl, bob.id, "still served")
    cb.expect({"msgid": 6, "msg": "still served"})


def test_legacy_login_ack_holds_json_strings_and_only_chats(chat):
    luser, friend, asker, answerer = chat.users(4)
    cl, cf = chat.online_all(luser, friend)
    chat.befriend(cl, cf)
    gid, gname = chat.make_group(cl, cf, desc="probe group")
    cl.ok({"msgid": 7, "friendid": answerer.id})  # answered while luser is away
    cl.logout()
    cf.expect({"msgid": 14, "id": luser.id, "state": "offline"})

    cf.ok({"msgid": 6, "toid": luser.id, "msg": "while you were away"})
    cf.ok({"msgid": 10, "groupid": gid, "msg": "group news"})
    cy = chat.online(answerer)
    assert cy.ack["friend_requests"] == [{"id": luser.id, "name": luser.name}]
    cy.ok({"msgid": 13, "friendid": luser.id, "accept": True})
    cx = chat.online(asker)
    cx.ok({"msgid": 7, "friendid": luser.id})

    legacy = chat.online(luser, legacy=True)
    ack = legacy.ack
    assert "friend_requests" not in ack
    friends = sorted(decode_all(ack["friends"]), key=lambda f: f["id"])
    assert friends == sorted(
        [
            {"id": friend.id, "name": friend.name, "state": "online"},
            {"id": answerer.id, "name": answerer.name, "state": "online"},
        ],
        key=lambda f: f["id"],
    )
    (group,) = decode_all(ack["groups"])
    assert (group["id"], group["groupname"], group["groupdesc"]) == (gid, gname, "probe group")
    members = sorted(decode_all(group["users"]), key=lambda u: u["id"])
    assert members == sorted(
        [
            {"id": luser.id, "name": luser.name, "state": "online", "role": "creator"},
            {"id": friend.id, "name": friend.name, "state": "online", "role": "normal"},
        ],
        key=lambda u: u["id"],
    )
    stored = decode_all(ack["offlinemsg"])
    assert [(m["msgid"], m["msg"]) for m in stored] == [
        (6, "while you were away"),
        (10, "group news"),
    ]
    assert stored[0]["id"] == friend.id and stored[0]["toid"] == luser.id
    assert stored[1]["groupid"] == gid and stored[1]["id"] == friend.id

    # the stored FRIEND_RESPONSE and the friend request wait for a modern login; (changed in
    # version 2) the legacy device's mark passed the chats it was sent, not the answer: a
    # modern login on that device gets the answer only (another device gets all three)
    legacy.send({"msgid": 3, "id": luser.id})
    barrier(legacy)
    modern = chat.client()
    modern.login(luser, device="legacy")
    assert [(m["msgid"], m["id"], m["accept"]) for m in modern.ack["offlinemsg"]] == [
        (13, answerer.id, True)
    ]
    assert modern.ack["friend_requests"] == [{"id": asker.id, "name": asker.name}]


def test_legacy_login_ack_leaves_out_only_the_empty_lists(chat):
    luser, friend = chat.users(2)
    cl, cf = chat.online_all(luser, friend)
    chat.befriend(cl, cf)
    cl.logout()
    legacy = chat.online(luser, legacy=True)
    assert decode_all(legacy.ack["friends"]) == [
        {"id": friend.id, "name": friend.name, "state": "online"}
    ]
    assert "groups" not in legacy.ack and "offlinemsg" not in legacy.ack
    assert "friend_requests" not in legacy.ack


# --------------------------------------------------------------------------- pushes


def test_legacy_connection_is_pushed_only_chats(chat):
    luser, friend, stranger = chat.users(3)
    cl, cf = chat.online_all(luser, friend)
    chat.befriend(cl, cf)
    gid, _ = chat.make_group(cf, cl)
    cl.logout()

    legacy = chat.online(luser, legacy=True)
    cf.expect({"msgid": 14, "id": luser.id, "state": "online"})
    cf.logout()  # PRESENCE offline: not for legacy
    cf.login(friend)  # PRESENCE online: not for legacy
    cs = chat.online(stranger)
    cs.ok({"msgid": 7, "friendid": luser.id})  # FRIEND_REQUEST: not for legacy
    cs.ok({"msgid": 6, "toid": luser.id, "msg": "plain chat"})
    cf.ok({"msgid": 10, "groupid": gid, "msg": "group chat"})
    got = legacy.expect({"msgid": 6})
    assert (got["msg"], got["id"], got["toid"]) == (
        "plain chat",
        stranger.id,
        luser.id,
    )
    got = legacy.expect({"msgid": 10})
    assert (got["msg"], got["groupid"]) == ("group chat", gid)
    legacy.assert_silent(0.5)

    # (changed in version 2) a modern login on another device leaves the legacy session on:
    # both get what the user receives; the legacy one without pos, as in version 1
    modern = chat.online(luser)
    assert modern.ack["friend_requests"] == [{"id": stranger.id, "name": stranger.name}]
    cf.ok({"msgid": 6, "toid": luser.id, "msg": "to both sessions"})
    assert "pos" in modern.expect({"msgid": 6, "msg": "to both sessions"})
    assert "pos" not in legacy.expect({"msgid": 6, "msg": "to both sessions"})
    # a modern login on device "legacy" takes the legacy session over: no KICKED for the
    # legacy connection, which is closed (its client could not tell it was logged out)
    taker = chat.client()
    taker.login(luser, device="legacy")
    assert not [f for f in legacy.expect_closed() if f.get("msgid") == 15]
    cf.ok({"msgid": 6, "toid": luser.id, "msg": "to the new session"})
    modern.expect({"msgid": 6, "msg": "to the new session"})
    taker.expect({"msgid": 6, "msg": "to the new session"})


def test_modern_and_legacy_clients_chat_with_each_other(chat):
    luser, muser = chat.users(2)
    cm = chat.online(muser)
    cl = chat.online(luser, legacy=True)

    legacy_chat(cl, muser.id, "hello modern")
    got = cm.expect({"msgid": 6, "msg": "hello modern"})
    assert got["id"] == luser.id and got["name"] == luser.name and got["toid"] == muser.id

    cm.ok({"msgid": 6, "toid": luser.id, "msg": "hello legacy"})
    got = cl.expect({"msgid": 6})
    assert (got["msg"], got["id"], got["name"], got["toid"]) == (
        "hello legacy",
        muser.id,
        muser.name,
        luser.id,
    )

    gid, _ = chat.make_group(cm)
    cl.send({"msgid": 9, "id": luser.id, "groupid": gid})
    barrier(cl)
    cm.ok({"msgid": 10, "groupid": gid, "msg": "group hello"})
    got = cl.expect({"msgid": 10})
    assert (got["msg"], got["groupid"], got["id"]) == ("group hello", gid, muser.id)
    legacy_group_chat(cl, gid, "group reply")
    got = cm.expect({"msgid": 10, "msg": "group reply"})
    assert got["id"] == luser.id and got["groupid"] == gid
    cl.assert_silent(0.3)

    # legacy user away: modern messages wait, and come as JSON strings
    cl.send({"msgid": 3, "id": luser.id})
    barrier(cl)
    cm.ok({"msgid": 6, "toid": luser.id, "msg": "you were away"})
    again = chat.online(luser, legacy=True)
    (m,) = decode_all(again.ack["offlinemsg"])
    assert (m["msgid"], m["msg"], m["id"]) == (6, "you were away", muser.id)


def test_legacy_identity_fields_are_not_trusted(chat):
    victim, liar, target = chat.users(3)
    cv, ct = chat.online_all(victim, target)
    cl = chat.online(liar, legacy=True)
    # a chat claiming another sender id is refused (silently, in this dialect)
    cl.send(
        {
            "msgid": 6,
            "id": victim.id,
            "name": victim.name,
            "toid": target.id,
            "msg": "spoof",
            "time": original_time(),
        }
    )
    # a made-up name with one's own id is replaced by the real one
    cl.send(
        {
            "msgid": 6,
            "id": liar.id,
            "name": "spoofed-as-victim",
            "toid": target.id,
            "msg": "honest id",
            "time": original_time(),
        }
    )
    got = ct.expect({"msgid": 6})
    assert (got["msg"], got["id"], got["name"]) == ("honest id", liar.id, liar.name)
    # LOGINOUT for someone else's id logs nobody out
    cl.send({"msgid": 3, "id": target.id})
    barrier(cl)
    cv.ok({"msgid": 6, "toid": target.id, "msg": "are you still there"})
    ct.expect({"msgid": 6, "msg": "are you still there"})
    legacy_chat(cl, target.id, "me too")
    ct.expect({"msgid": 6, "msg": "me too", "id": liar.id})
    ct.assert_silent(pattern={"msgid": 6})


def test_legacy_frames_in_one_write_and_split_frames(chat):
    luser, muser = chat.users(2)
    cm = chat.online(muser)
    cl = chat.online(luser, legacy=True)
    frames = [
        cl.encode(
            {
                "msgid": 6,
                "id": luser.id,
                "name": luser.name,
                "toid": muser.id,
                "msg": f"sticky{i}",
                "time": original_time(),
            }
        )
        + b"\0"
        for i in range(3)
    ]
    cl.send_raw(b"".join(frames))
    assert [f["msg"] for f in cm.expect_many({"msgid": 6}, 3)] == ["sticky0", "sticky1", "sticky2"]
    split = cl.encode({"msgid": 6, "id": luser.id, "toid": muser.id, "msg": "split"}) + b"\0"
    cl.send_raw(split[:15])
    time.sleep(0.05)
    cl.send_raw(split[15:])
    cm.expect({"msgid": 6, "msg": "split"})


# --------------------------------------------------------------------------- restarts (SQLite)


def test_users_friends_groups_and_stored_messages_survive_a_restart(sqlite_server_factory):
    chat = sqlite_server_factory.start()
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    chat.befriend(ca, cb)
    gid, gname = chat.make_group(ca, cb, desc="kept")
    used = [ca.ok({"msgid": 6, "toid": bob.id, "msg": "live"})["msg_id"]]
    cb.expect({"msgid": 6, "msg": "live"})
    cb.logout()
    cc.logout()
    stored = [
        ca.ok({"msgid": 6, "toid": bob.id, "msg": "stored chat"})["msg_id"],
        ca.ok({"msgid": 10, "groupid": gid, "msg": "stored group chat"})["msg_id"],
    ]
    # the newest message is delivered (and deleted) before the restart: its id must not return
    used.append(ca.ok({"msgid": 6, "toid": carol.id, "msg": "gone"})["msg_id"])
    cc.login(carol)
    assert [m["msg"] for m in cc.ack["offlinemsg"]] == ["gone"]
    used += stored

    chat = sqlite_server_factory.restart()

    cb = chat.online(bob)
    assert cb.ack["friends"] == [{"id": alice.id, "name": alice.name, "state": "offline"}]
    (group,) = cb.ack["groups"]
    assert (group["id"], group["groupname"], group["groupdesc"]) == (gid, gname, "kept")
    assert sorted((u["id"], u["role"], u["state"]) for u in group["users"]) == sorted(
        [(alice.id, "creator", "offline"), (bob.id, "normal", "online")]
    )
    assert [(m["msg_id"], m["msg"]) for m in cb.ack["offlinemsg"]] == list(
        zip(stored, ["stored chat", "stored group chat"], strict=True)
    )
    ca = chat.client()
    ack = ca.request({"msgid": 1, "name": alice.name, "password": alice.password})
    assert ack["errno"] == 0 and ack["id"] == alice.id, ack
    ca.user = alice
    cb.expect({"msgid": 14, "id": alice.id, "state": "online"})
    assert chat.online(carol).ack["offlinemsg"] == []
    chat.client().err({"msgid": 4, "name": alice.name, "password": "x"}, 1)
    ca.err({"msgid": 8, "groupname": gname}, 1)

    fresh = [
        ca.ok({"msgid": 6, "toid": bob.id, "msg": "after"})["msg_id"],
        ca.ok({"msgid": 10, "groupid": gid, "msg": "after group"})["msg_id"],
        ca.ok({"msgid": 6, "toid": carol.id, "msg": "after stored"})["msg_id"],
    ]
    assert not set(fresh) & set(used), (fresh, used)
    assert len(set(fresh)) == 3
    dave = chat.user()
    assert dave.id not in (alice.id, bob.id, carol.id)


def test_unreceipted_live_messages_are_stored_at_server_shutdown(sqlite_server_factory):
    chat = sqlite_server_factory.start()
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    cb = chat.online(bob, receipts=True)
    ack = ca.ok({"msgid": 6, "toid": bob.id, "msg": "in flight at shutdown"})
    cb.expect({"msgid": 6, "msg_id": ack["msg_id"]})
    chat = sqlite_server_factory.restart()
    again = chat.online(bob, receipts=True)
    assert [(m["msg_id"], m["msg"]) for m in again.ack["offlinemsg"]] == [
        (ack["msg_id"], "in flight at shutdown")
    ]


def test_friends_hear_of_a_server_shutdown(sqlite_server_factory):
    chat = sqlite_server_factory.start()
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    sqlite_server_factory.stop()
    # at the least, whoever is logged out first is seen leaving by the other, still online
    seen = [
        (conn.user.id, f["id"])
        for conn in (ca, cb)
        for f in conn.expect_closed(timeout=15)
        if f["msgid"] == 14 and f["state"] == "offline"
    ]
    assert seen, "no PRESENCE offline before the connections closed"
    assert set(seen) <= {(alice.id, bob.id), (bob.id, alice.id)}, seen


def test_an_acknowledged_message_survives_a_crash(sqlite_server_factory):
    chat = sqlite_server_factory.start()
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ack = ca.ok({"msgid": 6, "toid": bob.id, "msg": "durable before the ack"})
    chat = sqlite_server_factory.restart(kill=True)
    cb = chat.online(bob)
    assert [(m["msg_id"], m["msg"]) for m in cb.ack["offlinemsg"]] == [
        (ack["msg_id"], "durable before the ack")
    ]
    later = chat.online(alice).ok({"msgid": 6, "toid": bob.id, "msg": "after the crash"})
    assert later["msg_id"] != ack["msg_id"]


def test_a_legacy_chat_to_yourself_comes_back_as_the_original_sent_it(chat):
    """The original looked toid up in its map of connections and sent the message there: a
    chat to yourself came back to the connection that sent it (its client printed it). A
    legacy session has no ACK to carry its own copy, so it is pushed the message, with
    exactly the original's fields; the user's modern sessions get it too, once, with its pos."""
    (luser,) = chat.users(1)
    modern = chat.online(luser)
    legacy = chat.online(luser, legacy=True)
    legacy_chat(legacy, luser.id, "note to self")
    got = legacy.expect({"msgid": 6})
    assert set(got) == {"msgid", "id", "name", "toid", "msg", "time"}, got
    assert (got["msg"], got["id"], got["toid"]) == ("note to self", luser.id, luser.id)
    assert modern.expect({"msgid": 6, "msg": "note to self"})["pos"] == 1
    # a chat to someone else is not echoed to the legacy sender (the original did not either)
    (other,) = chat.users(1)
    legacy_chat(legacy, other.id, "to someone else")
    barrier(legacy)
    legacy.assert_silent(0.3, pattern={"msgid": 6})
    modern.expect({"msgid": 6, "msg": "to someone else"})
    modern.assert_silent(0.3, pattern={"msgid": 6})
