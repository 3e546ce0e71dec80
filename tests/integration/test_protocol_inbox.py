"""PROTOCOL.md Version 2, "Devices" and "The inbox": several sessions per account, every
message kept at its pos, SYNC, HISTORY and READ. Black-box, through the harness in conftest.py,
so scripts/test.sh runs it again on two nodes behind nginx and over WebSocket."""

import os

from conftest import device, is_int, positions

# On two nodes a device's session elsewhere counts by its kept mark, written when the session
# ends or receipts (docs/protocol.md, "Devices and the inbox"); on one node, by how far it got.
ONE_NODE = not os.environ.get("CHATSERVER_TEST_CLUSTER")


# --------------------------------------------------------------------------- devices


def test_two_devices_are_online_at_once_and_both_get_every_message(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    ack = cb.ok({"msgid": 6, "toid": alice.id, "msg": "to both"})
    on_pc = pc.expect({"msgid": 6, "msg": "to both"})
    on_phone = phone.expect({"msgid": 6, "msg": "to both"})
    assert on_pc["msg_id"] == on_phone["msg_id"] == ack["msg_id"]
    assert on_pc["pos"] == on_phone["pos"] == 1
    pc.assert_silent(pattern={"msgid": 15})
    phone.assert_silent(pattern={"msgid": 15})


def test_a_login_on_the_same_device_takes_over_that_session_only(chat):
    alice, bob = chat.users(2)
    old_pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    new_pc = device(chat, alice, "pc")
    old_pc.expect({"msgid": 15})
    old_pc.err({"msgid": 6, "toid": bob.id, "msg": "still there?"}, 3)
    phone.assert_silent(pattern={"msgid": 15})
    cb = chat.online(bob)
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "after the takeover"})
    new_pc.expect({"msgid": 6, "msg": "after the takeover"})
    phone.expect({"msgid": 6, "msg": "after the takeover"})
    old_pc.assert_silent(pattern={"msgid": 6})


def test_friends_see_online_at_the_first_session_and_offline_at_the_last(chat):
    alice, friend = chat.users(2)
    ca, cf = chat.online_all(alice, friend)
    chat.befriend(ca, cf)
    ca.logout()
    cf.expect({"msgid": 14, "id": alice.id, "state": "offline"})
    pc = device(chat, alice, "pc")
    cf.expect({"msgid": 14, "id": alice.id, "state": "online"})
    phone = device(chat, alice, "phone")
    pc.logout()
    cf.assert_silent(pattern={"msgid": 14})  # still online on the phone
    phone.logout()
    cf.expect({"msgid": 14, "id": alice.id, "state": "offline"})


def test_one_device_too_many_ends_the_session_logged_in_longest_ago(chat):
    (alice,) = chat.users(1)
    sessions = [device(chat, alice, f"d{i}") for i in range(8)]
    ninth = device(chat, alice, "d8")
    sessions[0].expect({"msgid": 15})
    for other in sessions[1:]:
        other.assert_silent(0.1, pattern={"msgid": 15})
    ninth.ok({"msgid": 16})
    sessions[1].ok({"msgid": 16})


def test_a_chat_reaches_the_senders_other_devices_with_the_senders_pos(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    ack = pc.ok({"msgid": 6, "toid": bob.id, "msg": "carbon"})
    assert is_int(ack["pos"]) and ack["pos"] == 1
    carbon = phone.expect({"msgid": 6, "msg": "carbon"})
    assert (carbon["msg_id"], carbon["pos"], carbon["id"], carbon["toid"]) == (
        ack["msg_id"], ack["pos"], alice.id, bob.id
    )
    got = cb.expect({"msgid": 6, "msg": "carbon"})
    assert got["pos"] == 1  # bob's own inbox numbers it
    pc.assert_silent(pattern={"msgid": 6})  # the sending device has it: its ACK


def test_login_fields_of_version_2_are_checked(chat):
    (alice,) = chat.users(1)
    c = chat.client()
    for bad, field in (
        ({"device": ""}, "device"),
        ({"device": "x" * 65}, "device"),
        ({"device": 7}, "device"),
        ({"since": -1}, "since"),
        ({"since": "1"}, "since"),
    ):
        c.err({"msgid": 1, "id": alice.id, "password": alice.password, **bad}, 7, field=field)
    c.login(alice, device="x" * 64)


# --------------------------------------------------------------------------- the inbox


def test_every_user_numbers_what_reaches_them_1_2_3_without_gaps(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb, cc)
    acks = [
        ca.ok({"msgid": 6, "toid": bob.id, "msg": "one"}),
        cc.ok({"msgid": 6, "toid": bob.id, "msg": "two"}),
        ca.ok({"msgid": 10, "groupid": gid, "msg": "three"}),
    ]
    # The joins came first: GROUP_EVENTs kept like messages (bob's and carol's for alice and
    # bob, carol's own for carol).
    joins = [cb.expect({"msgid": 29, "event": "joined"}) for _ in range(2)]
    assert positions(joins) == [1, 2]
    got = [cb.expect({"msgid": m}) for m in (6, 6, 10)]
    assert [g["msg"] for g in got] == ["one", "two", "three"]
    assert positions(got) == [3, 4, 5]
    assert [a["pos"] for a in acks] == [3, 2, 4]  # in alice's, carol's, alice's inbox
    assert cc.expect({"msgid": 10, "msg": "three"})["pos"] == 3


def test_a_message_to_yourself_takes_one_pos(chat):
    (alice,) = chat.users(1)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    ack = pc.ok({"msgid": 6, "toid": alice.id, "msg": "note to self"})
    got = phone.expect({"msgid": 6, "msg": "note to self"})
    assert ack["pos"] == got["pos"] == 1
    assert phone.ok({"msgid": 20, "since": 0})["last_pos"] == 1
    # the sending session's copy is its ACK: it is not pushed the message as well
    # (docs/protocol.md, "A message to yourself"; a legacy sender is, having no ACK)
    pc.assert_silent(pattern={"msgid": 6})


def test_offlinemsg_holds_what_came_after_the_devices_mark(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    phone = device(chat, alice, "phone")
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "seen live"})
    phone.expect({"msgid": 6, "msg": "seen live"})
    phone.logout()
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "while away"})
    # a device never seen starts after the lowest mark of the user's devices
    tablet = device(chat, alice, "tablet")
    assert positions(tablet.ack["offlinemsg"]) == [2]
    again = device(chat, alice, "phone")
    assert [(m["msg"], m["pos"]) for m in again.ack["offlinemsg"]] == [("while away", 2)]
    assert (again.ack["last_pos"], again.ack["read_pos"]) == (2, 0)
    # ... and a device with a session has got as far as it was sent: nothing waits for a new one
    if ONE_NODE:
        assert device(chat, alice, "desk").ack["offlinemsg"] == []


def test_a_device_never_seen_starts_after_what_the_online_devices_were_sent(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    pc = device(chat, alice, "pc")
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "live on the pc"})
    pc.expect({"msgid": 6, "msg": "live on the pc"})
    if ONE_NODE:
        assert device(chat, alice, "phone").ack["offlinemsg"] == []
    # with receipts, what a device has not receipted still waits for a new device
    (carol,) = chat.users(1)
    rpc = device(chat, carol, "rpc", receipts=True)
    msg_id = cb.ok({"msgid": 6, "toid": carol.id, "msg": "not receipted yet"})["msg_id"]
    rpc.expect({"msgid": 6, "msg": "not receipted yet"})
    waiting = device(chat, carol, "tablet", receipts=True).ack["offlinemsg"]
    assert [m["msg"] for m in waiting] == ["not receipted yet"]
    rpc.ok({"msgid": 19, "msg_ids": [msg_id]})
    if ONE_NODE:
        assert [m["msg"] for m in device(chat, carol, "desk").ack["offlinemsg"]] == [
            "not receipted yet"  # the tablet has not receipted it either
        ]


def test_login_since_replaces_the_devices_mark(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    for text in ("a", "b", "c"):
        cb.ok({"msgid": 6, "toid": alice.id, "msg": text})
    assert positions(device(chat, alice, "pc", since=1).ack["offlinemsg"]) == [2, 3]
    assert device(chat, alice, "pc", since=3).ack["offlinemsg"] == []
    assert positions(device(chat, alice, "pc", since=0).ack["offlinemsg"]) == [1, 2, 3]


def test_with_receipts_a_device_gets_again_what_it_did_not_receipt(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    pc = device(chat, alice, "pc", receipts=True)
    one = cb.ok({"msgid": 6, "toid": alice.id, "msg": "receipted"})["msg_id"]
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "not receipted"})
    pc.expect({"msgid": 6, "msg": "receipted"})
    pc.expect({"msgid": 6, "msg": "not receipted"})
    pc.ok({"msgid": 19, "msg_ids": [one]})
    pc.close()
    again = device(chat, alice, "pc", receipts=True)
    assert [m["msg"] for m in again.ack["offlinemsg"]] == ["not receipted"]


# --------------------------------------------------------------------------- SYNC


def test_sync_returns_what_follows_since_in_pos_order(chat):
    alice, bob = chat.users(2)
    cb = chat.online(bob)
    for i in range(5):
        cb.ok({"msgid": 6, "toid": alice.id, "msg": f"m{i}"})
    ca = chat.online(alice)
    synced = ca.ok({"msgid": 20, "since": 1, "limit": 2})
    assert positions(synced["msgs"]) == [2, 3]
    assert [m["msg"] for m in synced["msgs"]] == ["m1", "m2"]
    assert synced["last_pos"] == 5 and synced["truncated"] is False
    rest = ca.ok({"msgid": 20, "since": 3})
    assert positions(rest["msgs"]) == [4, 5]
    assert ca.ok({"msgid": 20, "since": 5})["msgs"] == []


def test_sync_checks_its_fields(chat):
    (alice,) = chat.users(1)
    ca = chat.online(alice)
    ca.err({"msgid": 20}, 7, field="since")
    ca.err({"msgid": 20, "since": -1}, 7, field="since")
    ca.err({"msgid": 20, "since": 0, "limit": 0}, 7, field="limit")
    ca.err({"msgid": 20, "since": 0, "limit": 501}, 7, field="limit")
    assert ca.ok({"msgid": 20, "since": 0, "limit": 500})["msgs"] == []
    chat.client().err({"msgid": 20, "since": 0}, 3)


# --------------------------------------------------------------------------- HISTORY


def test_history_pages_one_conversation_newest_page_first(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    for i in range(3):
        ca.ok({"msgid": 6, "toid": bob.id, "msg": f"a{i}"})
        cb.ok({"msgid": 6, "toid": alice.id, "msg": f"b{i}"})
    cc.ok({"msgid": 6, "toid": alice.id, "msg": "another conversation"})
    page = ca.ok({"msgid": 21, "with": bob.id, "limit": 4})
    assert [m["msg"] for m in page["msgs"]] == ["a1", "b1", "a2", "b2"]
    assert page["more"] is True
    older = ca.ok({"msgid": 21, "with": bob.id, "before": page["msgs"][0]["pos"]})
    assert [m["msg"] for m in older["msgs"]] == ["a0", "b0"]
    assert older["more"] is False
    both = positions(older["msgs"] + page["msgs"])
    assert both == sorted(both) and len(set(both)) == 6


def test_history_of_a_group_and_its_errors(chat):
    alice, bob, outsider = chat.users(3)
    ca, cb, co = chat.online_all(alice, bob, outsider)
    gid, _ = chat.make_group(ca, cb)
    ca.ok({"msgid": 10, "groupid": gid, "msg": "g1"})
    cb.ok({"msgid": 10, "groupid": gid, "msg": "g2"})
    page = cb.ok({"msgid": 21, "groupid": gid})
    # A group's history has its events too (Version 2, GROUP_EVENT): bob's join first.
    assert [m.get("msg", m.get("event")) for m in page["msgs"]] == ["joined", "g1", "g2"]
    assert page["more"] is False
    co.err({"msgid": 21, "groupid": gid}, 6)
    co.err({"msgid": 21, "groupid": 999_999_999}, 5)
    co.err({"msgid": 21, "with": 999_999_999}, 4)
    co.err({"msgid": 21}, 7)
    co.err({"msgid": 21, "with": alice.id, "groupid": gid}, 7)
    co.err({"msgid": 21, "with": alice.id, "limit": 101}, 7, field="limit")
    assert co.ok({"msgid": 21, "with": alice.id, "limit": 100})["msgs"] == []


# --------------------------------------------------------------------------- READ


def test_read_goes_to_the_other_devices_and_comes_back_at_login(chat):
    alice, bob = chat.users(2)
    pc, phone = device(chat, alice, "pc"), device(chat, alice, "phone")
    cb = chat.online(bob)
    for text in ("x", "y"):
        cb.ok({"msgid": 6, "toid": alice.id, "msg": text})
    pc.expect({"msgid": 6, "msg": "y"})
    pc.ok({"msgid": 22, "pos": 2})
    assert phone.expect({"msgid": 22})["pos"] == 2
    pc.assert_silent(pattern={"msgid": 22})
    phone.ok({"msgid": 22, "pos": 1})  # lower: changes nothing, passed to nobody
    pc.assert_silent(pattern={"msgid": 22})
    assert device(chat, alice, "tablet").ack["read_pos"] == 2
    pc.err({"msgid": 22, "pos": -1}, 7, field="pos")
    pc.err({"msgid": 22}, 7, field="pos")


# --------------------------------------------------------------------------- abuse


def test_logins_on_many_devices_keep_eight_and_cost_a_chatting_pair_nothing(chat):
    """One account logging in on 30 devices in a row: only the 8 newest sessions stay, the
    others are ended one by one (KICKED_MSG); a pair chatting beside it is served on time."""
    import time

    abuser, alice, bob = chat.users(3)
    ca, cb = chat.online_all(alice, bob)
    sessions = []
    latencies = []
    for i in range(30):
        sessions.append(device(chat, abuser, f"device-{i}"))
        started = time.monotonic()
        ca.ok({"msgid": 6, "toid": bob.id, "msg": f"beside {i}"})
        cb.expect({"msgid": 6, "msg": f"beside {i}"})
        latencies.append(time.monotonic() - started)
    for old in sessions[:-8]:
        old.expect({"msgid": 15})
    for live in sessions[-8:]:
        live.ok({"msgid": 16})
        live.assert_silent(0.05, pattern={"msgid": 15})
    latencies.sort()
    print(f"\nchat round trip beside 30 device logins: median {latencies[15] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    assert latencies[15] < 0.5


def test_a_full_sync_page_of_500_is_served_quickly(chat):
    import time

    alice, *senders = chat.users(5)
    for sender in chat.online_all(*senders):  # 150 each: within a connection's burst
        for i in range(150):
            sender.send({"msgid": 6, "toid": alice.id, "msg": f"m{i}", "seq": 100_000 + i})
        for _ in range(150):
            assert sender.expect({"msgid": 11})["errno"] == 0
    ca = chat.online(alice)
    started = time.monotonic()
    page = ca.ok({"msgid": 20, "since": 0, "limit": 500})
    elapsed = time.monotonic() - started
    assert positions(page["msgs"]) == list(range(1, 501)) and page["last_pos"] == 600
    print(f"\nSYNC of 500 messages: {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0
