"""PROTOCOL.md Version 2 at its edges: limits at their boundaries, missing and wrongly typed
fields, positions beyond `last_pos`, the order of faults (7, 3, 10, then 4 / 5 / 6, then 12, 13,
14), events reaching the actor's other devices, and version-1 clients. Black-box, raw JSON over
a socket, through the harness in conftest.py (so the suite's other drivers run it too)."""

from __future__ import annotations

import time

import pytest
from conftest import (
    Chat,
    ServerProcess,
    device,
    is_int,
    positions,
    same,
    unique_name,
)

pytestmark = pytest.mark.integration

UNKNOWN_ID = 2_000_000_000


def send_many(chat, recipient, count, *, senders=3):
    """count ONE_CHATs to recipient from fresh users, each well within a connection's burst."""
    users = chat.users(senders)
    conns = chat.online_all(*users)
    texts = []
    for i in range(count):
        c = conns[i % senders]
        text = f"n{i}"
        c.send({"msgid": 6, "toid": recipient.id, "msg": text, "seq": 500_000 + i})
        # one at a time per sender keeps the order of pos the order of i
        assert c.expect({"msgid": 11, "seq": 500_000 + i})["errno"] == 0
        texts.append(text)
    return texts


# --------------------------------------------------------------------------- SYNC


def test_sync_limit_1_gives_one_object_and_the_default_is_200(chat):
    (alice,) = chat.users(1)
    send_many(chat, alice, 201)
    ca = chat.online(alice, receipts=True)
    one = ca.ok({"msgid": 20, "since": 0, "limit": 1})
    assert positions(one["msgs"]) == [1] and one["last_pos"] == 201
    assert one["truncated"] is False
    page = ca.ok({"msgid": 20, "since": 0})
    assert positions(page["msgs"]) == list(range(1, 201))
    assert page["msgs"][0]["msg"] == "n0" and page["msgs"][-1]["msg"] == "n199"
    rest = ca.ok({"msgid": 20, "since": 200, "limit": 500})
    assert positions(rest["msgs"]) == [201] and rest["last_pos"] == 201


def test_sync_since_beyond_last_pos_is_an_empty_page(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "one"})
    ca = chat.online(alice)
    for since in (1, 2, 1_000_000, 2**62):
        page = ca.ok({"msgid": 20, "since": since, "limit": 1})
        assert page["msgs"] == [] and page["last_pos"] == 1 and page["truncated"] is False
    empty = chat.online(chat.users(1)[0]).ok({"msgid": 20, "since": 5})
    assert empty["msgs"] == [] and empty["last_pos"] == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"since": "0"}, "since"),
        ({"since": True}, "since"),
        ({"since": None}, "since"),
        ({"since": 1.0}, "since"),
        ({"since": 0, "limit": "5"}, "limit"),
        ({"since": 0, "limit": True}, "limit"),
        ({"since": 0, "limit": None}, "limit"),
        ({"since": 0, "limit": 2.5}, "limit"),
        ({"since": 0, "limit": -1}, "limit"),
        ({"limit": 5}, "since"),
    ],
)
def test_sync_wrong_fields_are_errno_7_naming_them(chat, request_, field):
    ca = chat.online(chat.users(1)[0])
    ca.err({"msgid": 20, **request_}, 7, field=field)
    ca.ok({"msgid": 16})


def test_sync_faults_come_in_the_documented_order(chat):
    alice, bob = chat.users(2)
    anon = chat.client()
    anon.err({"msgid": 20, "since": 0, "limit": 0}, 7, field="limit")  # 7 before 3
    anon.err({"msgid": 20, "since": 0, "id": alice.id}, 3)  # 3 before 10
    ca = chat.online(alice)
    ca.err({"msgid": 20, "since": 0, "limit": 501, "id": bob.id}, 7)  # 7 before 10
    ca.err({"msgid": 20, "since": 0, "id": bob.id}, 10)
    assert ca.ok({"msgid": 20, "since": 0, "id": alice.id})["msgs"] == []


# --------------------------------------------------------------------------- HISTORY


def test_history_default_limit_is_50_and_before_pages_back(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    for i in range(51):
        cb.ok({"msgid": 6, "toid": alice.id, "msg": f"h{i}"})
    ca = chat.online(alice)
    page = ca.ok({"msgid": 21, "with": bob.id})
    assert [m["msg"] for m in page["msgs"]] == [f"h{i}" for i in range(1, 51)]
    assert page["more"] is True
    assert positions(page["msgs"]) == list(range(2, 52))
    older = ca.ok({"msgid": 21, "with": bob.id, "before": 2})
    assert [m["msg"] for m in older["msgs"]] == ["h0"] and older["more"] is False
    # limit 1, and a `before` beyond last_pos is the newest page
    newest = ca.ok({"msgid": 21, "with": bob.id, "limit": 1, "before": 10_000})
    assert [m["msg"] for m in newest["msgs"]] == ["h50"] and newest["more"] is True
    # before 1 (and 0): nothing older
    for before in (1, 0):
        none = ca.ok({"msgid": 21, "with": bob.id, "before": before})
        assert none["msgs"] == [] and none["more"] is False
    # the other side sees the same conversation in its own inbox
    theirs = cb.ok({"msgid": 21, "with": alice.id, "limit": 100})
    assert [m["msg"] for m in theirs["msgs"]] == [f"h{i}" for i in range(51)]
    assert theirs["more"] is False


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"with": "OTHER"}, "with"),
        ({"with": True}, "with"),
        ({"groupid": "1"}, "groupid"),
        ({"with": "OTHER_ID", "before": "5"}, "before"),
        ({"with": "OTHER_ID", "before": -1}, "before"),
        ({"with": "OTHER_ID", "limit": 0}, "limit"),
        ({"with": "OTHER_ID", "limit": 101}, "limit"),
        ({"with": "OTHER_ID", "limit": "5"}, "limit"),
    ],
)
def test_history_wrong_fields_are_errno_7_naming_them(chat, request_, field):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    filled = {k: bob.id if v == "OTHER_ID" else v for k, v in request_.items()}
    ca.err({"msgid": 21, **filled}, 7, field=field)


def test_history_faults_come_in_the_documented_order(chat):
    alice, bob = chat.users(2)
    anon = chat.client()
    anon.err({"msgid": 21, "with": UNKNOWN_ID, "limit": 0}, 7)
    anon.err({"msgid": 21, "with": UNKNOWN_ID}, 3)
    ca = chat.online(alice)
    ca.err({"msgid": 21, "with": UNKNOWN_ID, "id": bob.id}, 10)
    ca.err({"msgid": 21, "groupid": UNKNOWN_ID, "id": bob.id}, 10)
    ca.err({"msgid": 21, "with": UNKNOWN_ID, "limit": 101}, 7)


def test_a_groups_history_starts_at_the_join_and_ends_with_membership(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca)
    ca.ok({"msgid": 10, "groupid": gid, "msg": "before bob"})
    cb.ok({"msgid": 9, "groupid": gid})
    ca.ok({"msgid": 10, "groupid": gid, "msg": "after bob"})
    page = cb.ok({"msgid": 21, "groupid": gid})
    assert [m.get("msg", m.get("event")) for m in page["msgs"]] == ["joined", "after bob"]
    assert page["more"] is False
    cb.ok({"msgid": 17, "groupid": gid})
    cb.err({"msgid": 21, "groupid": gid}, 6)  # left: not a member
    ca.ok({"msgid": 26, "groupid": gid})
    ca.err({"msgid": 21, "groupid": gid}, 5)  # dissolved: no such group
    cb.err({"msgid": 21, "groupid": gid}, 5)


def test_history_with_oneself_shows_the_notes_to_self(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 6, "toid": alice.id, "msg": "note"})
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "to bob"})
    page = ca.ok({"msgid": 21, "with": alice.id})
    assert [m["msg"] for m in page["msgs"]] == ["note"]


# --------------------------------------------------------------------------- READ


def test_read_beyond_last_pos_is_kept_as_last_pos(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "x"})
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    pc.ok({"msgid": 22, "pos": 1_000})
    assert same(phone.expect({"msgid": 22}), {"msgid": 22, "pos": 1})
    assert device(chat, alice, "tablet").ack["read_pos"] == 1


def test_read_of_the_kept_pos_again_is_not_passed_on(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "x"})
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    pc.ok({"msgid": 22, "pos": 1})
    phone.expect({"msgid": 22, "pos": 1})
    phone.ok({"msgid": 22, "pos": 1})
    phone.ok({"msgid": 22, "pos": 0})
    pc.assert_silent(pattern={"msgid": 22})


@pytest.mark.parametrize("pos", ["1", True, None, 1.0, [1]])
def test_read_with_a_wrongly_typed_pos_is_errno_7(chat, pos):
    ca = chat.online(chat.users(1)[0])
    ca.err({"msgid": 22, "pos": pos}, 7, field="pos")


def test_read_needs_a_login_and_ones_own_id(chat):
    alice, bob = chat.users(2)
    chat.client().err({"msgid": 22, "pos": 1}, 3)
    chat.client().err({"msgid": 22, "pos": -1}, 7)
    chat.online(alice).err({"msgid": 22, "pos": 1, "id": bob.id}, 10)


# --------------------------------------------------------------------------- LOGIN


def test_login_since_beyond_last_pos_gives_nothing_and_the_true_last_pos(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "one"})
    ack = device(chat, alice, "pc", since=50).ack
    assert ack["offlinemsg"] == [] and ack["last_pos"] == 1 and ack["read_pos"] == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"since": True}, "since"),
        ({"since": None}, "since"),
        ({"since": 1.5}, "since"),
        ({"device": None}, "device"),
        ({"device": ["pc"]}, "device"),
        ({"receipts": None}, "receipts"),
        ({"receipts": 0}, "receipts"),
    ],
)
def test_login_v2_fields_wrongly_typed_are_errno_7(chat, extra, field):
    (alice,) = chat.users(1)
    chat.client().err(
        {"msgid": 1, "id": alice.id, "password": alice.password, **extra}, 7, field=field
    )


def test_login_without_device_is_device_default(chat):
    """A version-1 client (no device) and a client saying device "default" are one device."""
    (alice,) = chat.users(1)
    v1 = chat.online(alice)
    named = device(chat, alice, "default")
    v1.expect({"msgid": 15})
    named.ok({"msgid": 16})
    v1_again = chat.online(alice)
    named.expect({"msgid": 15})
    v1_again.ok({"msgid": 16})


def test_a_version_1_client_sees_the_version_1_fields(chat):
    """No new request field sent: every version-1 field is there, of its type."""
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    for key in ("friends", "groups", "offlinemsg", "friend_requests"):
        assert isinstance(ca.ack[key], list)
    ack = ca.ok({"msgid": 6, "toid": bob.id, "msg": "v1"})
    assert is_int(ack["msg_id"]) and ack["msg_id"] > 0
    got = cb.expect({"msgid": 6, "msg": "v1"})
    assert (got["id"], got["name"], got["toid"], got["msg_id"]) == (
        alice.id, alice.name, bob.id, ack["msg_id"]
    )
    gid = ca.ok({"msgid": 8, "groupname": unique_name("g")})["groupid"]
    assert is_int(gid)
    assert cb.ok({"msgid": 9, "groupid": gid})["errno"] == 0
    sent = cb.ok({"msgid": 10, "groupid": gid, "msg": "v1 group"})
    assert is_int(sent["msg_id"])
    assert ca.expect({"msgid": 10, "msg": "v1 group"})["msg_id"] == sent["msg_id"]


def test_a_second_legacy_login_closes_the_first_legacy_connection(chat):
    (alice,) = chat.users(1)
    first = chat.online(alice, legacy=True)
    second = chat.online(alice, legacy=True)
    assert not [f for f in first.expect_closed() if f.get("msgid") == 15]
    assert second.ack["id"] == alice.id


# --------------------------------------------------------------------------- carbons


def test_a_group_chat_reaches_the_senders_other_devices_with_the_senders_pos(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    gid, _ = chat.make_group(pc, cb)
    ack = pc.ok({"msgid": 10, "groupid": gid, "msg": "to the group"})
    assert is_int(ack["pos"]) and ack["pos"] > 0
    carbon = phone.expect({"msgid": 10, "msg": "to the group"})
    assert (carbon["msg_id"], carbon["pos"], carbon["id"], carbon["groupid"]) == (
        ack["msg_id"], ack["pos"], alice.id, gid
    )
    assert cb.expect({"msgid": 10, "msg": "to the group"})["msg_id"] == ack["msg_id"]
    pc.assert_silent(pattern={"msgid": 10})
    # kept in the sender's inbox too: a device that was away finds it
    later = device(chat, alice, "tablet", since=ack["pos"] - 1)
    assert [m["msg_id"] for m in later.ack["offlinemsg"]] == [ack["msg_id"]]


def test_a_chat_to_someone_offline_still_reaches_the_senders_other_devices(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    ack = pc.ok({"msgid": 6, "toid": bob.id, "msg": "while bob is away"})
    assert phone.expect({"msgid": 6, "msg": "while bob is away"})["pos"] == ack["pos"]


def test_group_chat_ack_carries_not_stored(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    ack = ca.ok({"msgid": 10, "groupid": gid, "msg": "m"})
    assert same(ack["not_stored"], [])


# --------------------------------------------------------------------------- groups


def test_group_admin_faults_4_5_6_come_before_12(chat):
    alice, bob, carol, outsider = chat.users(4)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb, cc)
    # bob is a normal member: not permitted to kick anybody, but naming a non-member or an
    # unknown user is reported first
    cb.err({"msgid": 23, "groupid": gid, "userid": outsider.id}, 6)
    cb.err({"msgid": 23, "groupid": gid, "userid": UNKNOWN_ID}, 4)
    cb.err({"msgid": 24, "groupid": gid, "userid": outsider.id, "role": "admin"}, 6)
    cb.err({"msgid": 25, "groupid": gid, "userid": UNKNOWN_ID}, 4)
    cb.err({"msgid": 27, "groupid": gid, "userid": outsider.id, "until": 0}, 6)
    cb.err({"msgid": 26, "groupid": UNKNOWN_ID}, 5)
    cb.err({"msgid": 28, "groupid": UNKNOWN_ID, "groupdesc": "x"}, 5)
    cb.err({"msgid": 23, "groupid": gid, "userid": carol.id}, 12)
    # 7 before everything; 10 before 4/5/6
    cb.err({"msgid": 23, "groupid": gid, "userid": "x"}, 7, field="userid")
    cb.err({"msgid": 23, "groupid": UNKNOWN_ID, "userid": carol.id, "id": alice.id}, 10)
    chat.client().err({"msgid": 26, "groupid": UNKNOWN_ID}, 3)
    chat.client().err({"msgid": 26, "groupid": "1"}, 7, field="groupid")


def test_roles_act_only_on_lower_roles(chat):
    alice, bob, carol, dave = chat.users(4)
    ca, cb, cc, cd = chat.online_all(alice, bob, carol, dave)
    gid, _ = chat.make_group(ca, cb, cc, cd)
    ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})
    ca.ok({"msgid": 24, "groupid": gid, "userid": carol.id, "role": "admin"})
    until = int(time.time() * 1000) + 60_000
    cb.err({"msgid": 23, "groupid": gid, "userid": carol.id}, 12)  # admin on admin
    cb.err({"msgid": 27, "groupid": gid, "userid": carol.id, "until": until}, 12)
    cb.err({"msgid": 27, "groupid": gid, "userid": alice.id, "until": until}, 12)
    cb.err({"msgid": 24, "groupid": gid, "userid": dave.id, "role": "admin"}, 12)  # creator only
    cb.err({"msgid": 25, "groupid": gid, "userid": dave.id}, 12)
    cb.err({"msgid": 26, "groupid": gid}, 12)
    ca.err({"msgid": 24, "groupid": gid, "userid": alice.id, "role": "normal"}, 12)  # oneself
    ca.err({"msgid": 27, "groupid": gid, "userid": alice.id, "until": until}, 12)
    ca.err({"msgid": 25, "groupid": gid, "userid": alice.id}, 12)
    cb.ok({"msgid": 27, "groupid": gid, "userid": dave.id, "until": until})  # admin on normal
    ca.ok({"msgid": 23, "groupid": gid, "userid": carol.id})  # creator on admin
    ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "normal"})
    cb.err({"msgid": 28, "groupid": gid, "groupdesc": "no longer admin"}, 12)


def test_a_muted_members_malformed_chat_is_errno_7_before_13(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    until = int(time.time() * 1000) + 60_000
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": until})
    cb.err({"msgid": 10, "groupid": gid, "msg": ""}, 7)
    cb.err({"msgid": 10, "groupid": gid, "msg": "x", "id": alice.id}, 10)
    refused = cb.err({"msgid": 10, "groupid": gid, "msg": "x"}, 13)
    assert same(refused["until"], until)
    # a mute does not stop the other requests
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "direct still works"})
    ca.err({"msgid": 27, "groupid": gid, "userid": bob.id, "until": -1}, 7, field="until")


def test_group_events_carry_the_fields_that_apply(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    new_name = unique_name("g")
    ca.ok({"msgid": 28, "groupid": gid, "groupname": new_name})
    ca.ok({"msgid": 28, "groupid": gid, "groupdesc": "d2"})
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 0})
    ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})
    ca.ok({"msgid": 25, "groupid": gid, "userid": bob.id})
    for c in (ca, cb):
        renamed = c.expect({"msgid": 29, "event": "updated", "groupname": new_name})
        assert (renamed["userid"], renamed["by"]) == (alice.id, alice.id)
        described = c.expect({"msgid": 29, "event": "updated", "groupdesc": "d2"})
        assert renamed["pos"] < described["pos"]
        unmuted = c.expect({"msgid": 29, "event": "muted"})
        assert same(unmuted["until"], 0) and unmuted["userid"] == bob.id
        role = c.expect({"msgid": 29, "event": "role"})
        assert role["role"] == "admin"
        transfer = c.expect({"msgid": 29, "event": "transfer"})
        assert (transfer["userid"], transfer["by"], transfer["role"]) == (
            bob.id, alice.id, "creator"
        )
        for event in (renamed, described, unmuted, role, transfer):
            assert event["groupid"] == gid and is_int(event["msg_id"]) and is_int(event["ts"])
    roles = {u["id"]: u["role"] for u in chat.online(bob).ack["groups"][0]["users"]}
    assert roles == {alice.id: "admin", bob.id: "creator"}


def test_events_reach_the_other_devices_of_who_joined_left_or_was_kicked(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    gid, _ = chat.make_group(ca)
    pc, phone = device(chat, bob, "pc"), device(chat, bob, "phone")
    pc.ok({"msgid": 9, "groupid": gid})
    for c in (ca, pc, phone):
        got = c.expect({"msgid": 29, "event": "joined", "groupid": gid})
        assert (got["userid"], got["by"]) == (bob.id, bob.id)
    pc.ok({"msgid": 17, "groupid": gid})
    for c in (ca, pc, phone):
        got = c.expect({"msgid": 29, "event": "left", "groupid": gid})
        assert (got["userid"], got["by"]) == (bob.id, bob.id)
    phone.ok({"msgid": 9, "groupid": gid})
    for c in (ca, pc, phone):
        c.expect({"msgid": 29, "event": "joined", "groupid": gid})
    ca.ok({"msgid": 23, "groupid": gid, "userid": bob.id})
    for c in (ca, pc, phone):
        got = c.expect({"msgid": 29, "event": "kicked", "groupid": gid})
        assert (got["userid"], got["by"]) == (bob.id, alice.id)


def test_an_actors_other_devices_hear_of_what_the_actor_did(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    gid, _ = chat.make_group(pc, cb)
    pc.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})
    got = phone.expect({"msgid": 29, "event": "role"})
    assert (got["userid"], got["by"], got["role"]) == (bob.id, alice.id, "admin")
    assert pc.expect({"msgid": 29, "event": "role"})["pos"] == got["pos"]
    pc.ok({"msgid": 26, "groupid": gid})
    for c in (pc, phone, cb):
        c.expect({"msgid": 29, "event": "dissolved", "groupid": gid})


def test_update_to_the_groups_own_name_is_not_a_name_in_use(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    gid, name = chat.make_group(ca)
    ca.ok({"msgid": 28, "groupid": gid, "groupname": name})


def test_group_update_checks_its_fields(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    gid, _ = chat.make_group(ca)
    ca.err({"msgid": 28, "groupid": gid, "groupname": 5}, 7, field="groupname")
    ca.err({"msgid": 28, "groupid": gid, "groupdesc": None}, 7, field="groupdesc")
    ca.err({"msgid": 28, "groupid": gid, "groupdesc": "x" * 201}, 7)
    ca.err({"msgid": 28, "groupid": gid, "groupname": "x" * 51}, 7)
    ca.ok({"msgid": 28, "groupid": gid, "groupdesc": "x" * 200})
    ca.ok({"msgid": 28, "groupid": gid, "groupdesc": ""})


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"msgid": 23, "groupid": "GID"}, "userid"),
        ({"msgid": 23, "userid": 1}, "groupid"),
        ({"msgid": 24, "groupid": "GID", "userid": 1, "role": 1}, "role"),
        ({"msgid": 25, "groupid": "GID", "userid": "1"}, "userid"),
        ({"msgid": 26}, "groupid"),
        ({"msgid": 27, "groupid": "GID", "userid": 1}, "until"),
        ({"msgid": 27, "groupid": "GID", "userid": 1, "until": 1.5}, "until"),
        ({"msgid": 30, "userid": "1", "block": True}, "userid"),
        ({"msgid": 30, "userid": 1, "block": 1}, "block"),
        ({"msgid": 32, "password": "x"}, "action"),
        ({"msgid": 32, "action": "delete"}, "password"),
        ({"msgid": 32, "action": 1, "password": "x"}, "action"),
        ({"msgid": 32, "action": "password", "password": "x", "new_password": 5}, "new_password"),
        ({"msgid": 33, "size": 1, "mime": "text/plain"}, "name"),
        ({"msgid": 33, "name": "a", "size": "1", "mime": "text/plain"}, "size"),
        ({"msgid": 33, "name": "a", "size": 1}, "mime"),
        ({"msgid": 34}, "file_id"),
        ({"msgid": 34, "file_id": "1"}, "file_id"),
        ({"msgid": 6, "toid": 1, "msg": "", "file": "1"}, "file"),
        ({"msgid": 10, "groupid": "GID", "msg": "", "file": True}, "file"),
    ],
)
def test_version_2_requests_with_wrong_fields_are_errno_7_naming_them(chat, request_, field):
    ca = chat.online(chat.users(1)[0])
    gid, _ = chat.make_group(ca)
    filled = {k: gid if v == "GID" else v for k, v in request_.items()}
    ca.err(filled, 7, field=field)
    ca.ok({"msgid": 16})


# --------------------------------------------------------------------------- blocking


def test_blocking_drops_requests_both_ways_and_ones_own_add_friend_is_12(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    cb.ok({"msgid": 7, "friendid": alice.id})  # bob asks alice
    ca.expect({"msgid": 12, "id": bob.id})
    ca.ok({"msgid": 7, "friendid": carol.id})  # alice asks carol
    cc.expect({"msgid": 12, "id": alice.id})
    ca.ok({"msgid": 30, "userid": bob.id, "block": True})
    ca.ok({"msgid": 30, "userid": carol.id, "block": True})
    ca.err({"msgid": 13, "friendid": bob.id, "accept": True}, 4)  # dropped
    cc.err({"msgid": 13, "friendid": alice.id, "accept": True}, 4)  # dropped
    ca.err({"msgid": 7, "friendid": bob.id}, 12)  # unblock first
    ack = device(chat, alice, "phone").ack
    assert ack["friend_requests"] == [] and sorted(ack["blocked"]) == sorted([bob.id, carol.id])
    # blocked: bob's chat is 12, but a malformed one is 7 and an unknown id 4 first
    cb.err({"msgid": 6, "toid": alice.id, "msg": ""}, 7)
    cb.err({"msgid": 6, "toid": alice.id, "msg": "x", "id": carol.id}, 10)
    cb.err({"msgid": 6, "toid": alice.id, "msg": "x"}, 12)
    ca.ok({"msgid": 30, "userid": bob.id, "block": False})
    assert device(chat, alice, "tablet").ack["blocked"] == [carol.id]
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "unblocked"})


def test_blocked_users_get_no_presence_of_the_blocker(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    ca.ok({"msgid": 30, "userid": bob.id, "block": True})
    cb.expect({"msgid": 31, "id": alice.id})
    ca.logout()
    chat.online(alice).logout()
    cb.assert_silent(pattern={"msgid": 14})


# --------------------------------------------------------------------------- accounts and files


def test_account_password_rules_and_fault_order(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    ca.err({"msgid": 32, "action": "password", "password": alice.password,
            "new_password": ""}, 7)
    ca.err({"msgid": 32, "action": "password", "password": alice.password,
            "new_password": "x" * 129}, 7)
    # a bad new password is reported before a wrong old one (7 first)
    ca.err({"msgid": 32, "action": "password", "password": "wrong", "new_password": ""}, 7)
    chat.client().err({"msgid": 32, "action": "delete", "password": alice.password}, 3)
    ca.ok({"msgid": 32, "action": "password", "password": alice.password,
           "new_password": "x" * 128})


def test_files_without_a_web_port_are_errno_11_after_7_and_3(chat):
    (alice,) = chat.users(1)
    chat.client().err({"msgid": 33, "name": "a.txt", "size": 1, "mime": "text/plain"}, 3)
    chat.client().err({"msgid": 33, "name": "a.txt", "size": -1, "mime": "text/plain"}, 7)
    ca = chat.online(alice)
    ca.err({"msgid": 33, "name": "a.txt", "size": 1, "mime": "text/plain"}, 11)
    ca.err({"msgid": 33, "name": "a/b", "size": 1, "mime": "text/plain"}, 7, field="name")
    ca.err({"msgid": 34, "file_id": 1}, 11)
    # a chat naming a file that is not there is errno 7
    ca.err({"msgid": 6, "toid": alice.id, "msg": "", "file": UNKNOWN_ID}, 7)


# --------------------------------------------------------------------------- configured limits


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A server with a group member limit of 3 and 2 devices per user."""
    directory = tmp_path_factory.mktemp("small")
    proc = ServerProcess(
        "memory://", directory / "server.log",
        extra_args=["--group-member-limit", "3", "--devices-per-user", "2"],
    ).start()
    yield proc
    proc.stop()
    proc.assert_no_traceback()


@pytest.fixture
def small(small_server):
    chat = Chat(small_server)
    yield chat
    chat.close_all()


def test_adding_to_a_full_group_is_12_and_rejoining_a_full_one_is_0(small):
    chat = small
    if True:
        alice, bob, carol, dave = chat.users(4)
        ca, cb, cc, cd = chat.online_all(alice, bob, carol, dave)
        gid, _ = chat.make_group(ca, cb, cc)
        cd.err({"msgid": 9, "groupid": gid}, 12)
        cd.err({"msgid": 9, "groupid": UNKNOWN_ID}, 5)
        assert cc.ok({"msgid": 9, "groupid": gid})["errno"] == 0  # joining twice
        cc.ok({"msgid": 17, "groupid": gid})
        assert len(cd.ok({"msgid": 9, "groupid": gid})["group"]["users"]) == 3


def test_a_third_device_ends_the_oldest_of_two(small):
    chat = small
    if True:
        (alice,) = chat.users(1)
        first, second = device(chat, alice, "a"), device(chat, alice, "b")
        third = device(chat, alice, "c")
        first.expect({"msgid": 15})
        second.ok({"msgid": 16})
        third.ok({"msgid": 16})
        second.assert_silent(0.2, pattern={"msgid": 15})


# --------------------------------------------------------------------------- more of the inbox


def test_objects_receipted_out_of_order_are_not_sent_again(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    pc = device(chat, alice, "pc", receipts=True)
    ids = [cb.ok({"msgid": 6, "toid": alice.id, "msg": t})["msg_id"] for t in ("a", "b", "c")]
    for t in ("a", "b", "c"):
        pc.expect({"msgid": 6, "msg": t})
    pc.ok({"msgid": 19, "msg_ids": [ids[2], ids[1]]})
    pc.close()
    again = device(chat, alice, "pc", receipts=True)
    assert [m["msg"] for m in again.ack["offlinemsg"]] == ["a"]
    assert again.ack["last_pos"] == 3


def test_sync_carries_friend_responses_and_group_events_with_their_pos(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)  # alice is told bob's answer: a FRIEND_RESPONSE in her inbox
    gid, _ = chat.make_group(cb, ca)  # alice's join: a GROUP_EVENT in her inbox
    page = ca.ok({"msgid": 20, "since": 0})
    assert [(m["msgid"], m["pos"]) for m in page["msgs"]] == [(13, 1), (29, 2)]
    assert page["msgs"][0]["accept"] is True and page["msgs"][1]["event"] == "joined"
    assert page["msgs"][1]["groupid"] == gid and page["last_pos"] == 2
    # a friend answer belongs to no conversation (docs/protocol.md): HISTORY does not show it
    assert ca.ok({"msgid": 21, "with": bob.id})["msgs"] == []


def test_a_deleted_users_stored_message_comes_under_the_name_deleted_user(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "before I go"})
    ca.ok({"msgid": 32, "action": "delete", "password": alice.password})
    cb = chat.online(bob)
    (stored,) = cb.ack["offlinemsg"]
    assert (stored["msg"], stored["id"], stored["name"]) == ("before I go", alice.id,
                                                           "deleted user")
    (kept,) = cb.ok({"msgid": 21, "with": alice.id})["msgs"]
    assert kept["name"] == "deleted user"


def test_a_legacy_session_is_sent_no_read_and_its_ack_no_version_2_lists(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 30, "userid": alice.id, "block": True})
    legacy = chat.online(bob, legacy=True)
    assert "blocked" not in legacy.ack and "last_pos" not in legacy.ack
    modern = chat.online(bob)
    chat.online(alice).ok({"msgid": 6, "toid": chat.users(1)[0].id, "msg": "x"})
    cb2 = chat.online(chat.users(1)[0])
    cb2.ok({"msgid": 6, "toid": bob.id, "msg": "to read"})
    modern.expect({"msgid": 6, "msg": "to read"})
    modern.ok({"msgid": 22, "pos": 1})
    legacy.expect({"msgid": 6, "msg": "to read"})
    legacy.assert_silent(0.5)  # the frame checker refuses a READ_MSG in the legacy dialect


# --------------------------------------------------------------------------- every device


def test_friend_requests_and_presence_reach_every_device(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    cb.ok({"msgid": 7, "friendid": alice.id})
    for c in (pc, phone):
        c.expect({"msgid": 12, "id": bob.id})
    phone.ok({"msgid": 13, "friendid": bob.id, "accept": True})
    told = cb.expect({"msgid": 13, "id": alice.id})
    assert told["accept"] is True and is_int(told["pos"])
    for c in (pc, phone):
        c.expect({"msgid": 14, "id": bob.id, "state": "online"})
    cb.expect({"msgid": 14, "id": alice.id, "state": "online"})
    cb.logout()
    for c in (pc, phone):
        c.expect({"msgid": 14, "id": bob.id, "state": "offline"})


def test_accepting_a_request_of_someone_offline_tells_their_state(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    ca.ok({"msgid": 7, "friendid": bob.id})
    ca.logout()
    cb = chat.online(bob)
    cb.ok({"msgid": 13, "friendid": alice.id, "accept": True})
    cb.expect({"msgid": 14, "id": alice.id, "state": "offline"})


def test_takeover_kicks_only_that_device_and_friends_hear_nothing(chat):
    alice, friend = chat.users(2)
    pc, cf = chat.online_all(alice, friend)
    chat.befriend(pc, cf)
    pc.logout()
    cf.expect({"msgid": 14, "id": alice.id, "state": "offline"})
    pc.login(alice, device="pc")
    cf.expect({"msgid": 14, "id": alice.id, "state": "online"})
    phone = device(chat, alice, "phone")
    new_pc = device(chat, alice, "pc")
    pc.expect({"msgid": 15})
    phone.assert_silent(0.2, pattern={"msgid": 15})
    new_pc.assert_silent(0.2, pattern={"msgid": 15})
    cf.assert_silent(pattern={"msgid": 14})
    # the kicked connection stays open and may log in again
    pc.login(alice, device="tablet")
    pc.ok({"msgid": 16})


# --------------------------------------------------------------------------- history window 0


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory):
    """A server with --history-days 0: nothing kept once every device had it."""
    directory = tmp_path_factory.mktemp("forgetful")
    proc = ServerProcess(
        "memory://", directory / "server.log", extra_args=["--history-days", "0"]
    ).start()
    chat = Chat(proc)
    yield chat
    chat.close_all()
    proc.stop()
    proc.assert_no_traceback()


def test_with_a_history_window_of_0_sync_sees_only_what_still_waits(forgetful):
    chat = forgetful
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "waits"})
    pc = device(chat, alice, "pc")
    assert [m["msg"] for m in pc.ack["offlinemsg"]] == ["waits"]
    # until the session ends (or receipts) its mark is not kept, so it still waits
    assert [m["msg"] for m in pc.ok({"msgid": 20, "since": 0})["msgs"]] == ["waits"]
    pc.logout()
    # every device had it: gone, as in version 1
    again = device(chat, alice, "pc")
    assert again.ack["offlinemsg"] == [] and again.ack["last_pos"] == 1
    synced = again.ok({"msgid": 20, "since": 0})
    assert synced["msgs"] == [] and synced["last_pos"] == 1 and synced["truncated"] is True
    assert again.ok({"msgid": 21, "with": bob.id})["msgs"] == []
    assert device(chat, alice, "phone").ack["offlinemsg"] == []


def test_with_a_history_window_of_0_the_senders_copy_waits_for_the_senders_devices(forgetful):
    """The sender's copy is an entry of the sender's inbox (PROTOCOL.md: ONE_CHAT "received or
    sent" takes a pos), there for the sender's other devices ("so every device shows the whole
    conversation"). With a window of 0 it goes once every device of the *sender's* has had it;
    the recipient receipting their own copy does not touch it (docs/protocol.md, "Devices and
    the inbox")."""
    chat = forgetful
    alice, bob = chat.users(2)
    device(chat, alice, "phone").logout()  # alice's phone: a device that has had nothing
    pc = device(chat, alice, "pc")
    cb = device(chat, bob, "pc", receipts=True)
    sent = pc.ok({"msgid": 6, "toid": bob.id, "msg": "hello"})
    got = cb.expect({"msgid": 6, "msg": "hello"})
    cb.ok({"msgid": 19, "msg_ids": [got["msg_id"]]})
    # bob's copy: every device of bob's has had it, gone
    assert cb.ok({"msgid": 20, "since": 0})["msgs"] == []
    # alice's copy: her phone has not had it, so it still waits (for the phone)
    pc.logout()
    again = device(chat, alice, "pc")
    assert again.ack["offlinemsg"] == []  # the pc had it (its ACK)
    waiting = again.ok({"msgid": 20, "since": 0})["msgs"]
    assert [(m["msg"], m["pos"]) for m in waiting] == [("hello", sent["pos"])]
    assert [m["msg"] for m in again.ok({"msgid": 21, "with": bob.id})["msgs"]] == ["hello"]
    phone = device(chat, alice, "phone")
    assert [m["msg"] for m in phone.ack["offlinemsg"]] == ["hello"]
    phone.logout()
    again.logout()
    # every device of alice's has had it: gone from her inbox too
    last = device(chat, alice, "pc")
    assert last.ok({"msgid": 20, "since": 0})["msgs"] == []
    assert last.ok({"msgid": 21, "with": bob.id})["msgs"] == []


# --------------------------------------------------------------------------- more orders


def test_a_chat_with_a_file_that_is_not_there_is_7_before_4_5_6_12_13(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb)
    file = {"msg": "", "file": UNKNOWN_ID}
    ca.err({"msgid": 6, "toid": UNKNOWN_ID, **file}, 7)  # before 4
    ca.err({"msgid": 10, "groupid": UNKNOWN_ID, **file}, 7)  # before 5
    cc.err({"msgid": 10, "groupid": gid, **file}, 7)  # before 6
    ca.ok({"msgid": 30, "userid": carol.id, "block": True})
    cc.err({"msgid": 6, "toid": alice.id, **file}, 7)  # before 12
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id,
           "until": int(time.time() * 1000) + 60_000})
    cb.err({"msgid": 10, "groupid": gid, **file}, 7)  # before 13
    cb.err({"msgid": 10, "groupid": gid, "msg": "x"}, 13)
    cc.err({"msgid": 6, "toid": alice.id, "msg": "x"}, 12)


def test_a_creator_alone_leaving_dissolves_and_all_their_devices_hear_it(chat):
    (alice,) = chat.users(1)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    gid, name = chat.make_group(pc)
    pc.ok({"msgid": 17, "groupid": gid})
    for c in (pc, phone):
        gone = c.expect({"msgid": 29, "event": "dissolved", "groupid": gid})
        assert (gone["userid"], gone["by"]) == (alice.id, alice.id)
    pc.err({"msgid": 9, "groupid": gid}, 5)
    pc.ok({"msgid": 8, "groupname": name})  # the name is free


def test_a_swallowed_request_does_not_wait_for_an_unblock(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 30, "userid": bob.id, "block": True})
    cb.ok({"msgid": 7, "friendid": alice.id})
    ca.ok({"msgid": 30, "userid": bob.id, "block": False})
    ca.assert_silent(pattern={"msgid": 12})
    assert device(chat, alice, "phone").ack["friend_requests"] == []
    ca.err({"msgid": 13, "friendid": bob.id, "accept": True}, 4)


def test_a_deleted_account_leaves_no_block_behind(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    cb.ok({"msgid": 30, "userid": alice.id, "block": True})
    ca = chat.online(alice)
    ca.ok({"msgid": 32, "action": "delete", "password": alice.password})
    assert device(chat, bob, "phone").ack["blocked"] == []
    cb.err({"msgid": 30, "userid": alice.id, "block": True}, 4)


@pytest.mark.parametrize("msgid", [29, 31, 35, 99])
def test_server_side_and_unknown_msgids_are_errno_7(chat, msgid):
    (alice,) = chat.users(1)
    c = chat.client()
    c.err({"msgid": msgid}, 7)
    c.login(alice)
    c.err({"msgid": msgid, "groupid": 1, "id": alice.id}, 7)


def test_a_group_event_follows_the_receipt_rules_of_every_msg_id(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    gid, _ = chat.make_group(ca)
    rpc = device(chat, alice, "rpc", receipts=True)
    chat.online(bob).ok({"msgid": 9, "groupid": gid})
    joined = rpc.expect({"msgid": 29, "event": "joined", "userid": bob.id})
    rpc.close()
    again = device(chat, alice, "rpc", receipts=True)
    waiting = [m for m in again.ack["offlinemsg"] if m["msgid"] == 29]
    assert [(m["msg_id"], m["pos"]) for m in waiting] == [(joined["msg_id"], joined["pos"])]
    again.ok({"msgid": 19, "msg_ids": [joined["msg_id"]]})
    again.close()
    assert device(chat, alice, "rpc", receipts=True).ack["offlinemsg"] == []


def test_a_member_kicked_while_away_finds_the_event_at_login(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    cb.logout()
    ca.ok({"msgid": 23, "groupid": gid, "userid": bob.id})
    back = chat.online(bob)
    events = [(m["event"], m["userid"], m["by"]) for m in back.ack["offlinemsg"]
              if m["msgid"] == 29]
    assert events == [("kicked", bob.id, alice.id)]
    assert back.ack["groups"] == []
    back.err({"msgid": 21, "groupid": gid}, 6)


def test_a_session_ended_by_the_device_limit_is_logged_out_and_may_log_in_again(small):
    chat = small
    (alice,) = chat.users(1)
    first, second = device(chat, alice, "a"), device(chat, alice, "b")
    device(chat, alice, "c")
    first.expect({"msgid": 15})
    first.err({"msgid": 20, "since": 0}, 3)
    first.login(alice, device="a")  # ends b, now the oldest
    second.expect({"msgid": 15})


def test_a_legacy_session_ended_by_the_device_limit_is_closed(small):
    chat = small
    (alice,) = chat.users(1)
    legacy = chat.online(alice, legacy=True)
    device(chat, alice, "a")
    device(chat, alice, "b")
    assert not [f for f in legacy.expect_closed() if f.get("msgid") == 15]


def test_login_with_a_password_and_a_token_on_a_server_without_authenticator(chat):
    (alice,) = chat.users(1)
    c = chat.client()
    c.err({"msgid": 1, "id": alice.id, "token": "t"}, 7)
    c.err({"msgid": 1, "id": alice.id, "password": alice.password, "token": 5}, 7, field="token")
    ack = c.request({"msgid": 1, "id": alice.id, "password": alice.password, "token": "t"})
    assert same(ack["errno"], 0), ack
