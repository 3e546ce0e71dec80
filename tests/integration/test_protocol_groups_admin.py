"""Groups that can be run (PROTOCOL.md Version 2): roles, GROUP_KICK (23), GROUP_ROLE (24),
GROUP_TRANSFER (25), GROUP_DISSOLVE (26), GROUP_MUTE (27, errno 13 with `until`), GROUP_UPDATE
(28), the creator's LEAVE_GROUP, and what a stranger can make happen."""

from __future__ import annotations

import time

import pytest
from conftest import unique_name

pytestmark = pytest.mark.integration

UNKNOWN_ID = 2_000_000_000


def groups_seen_by(chat, user) -> list[dict]:
    """The user's groups, as a login on one more device lists them (the user's other sessions
    stay)."""
    c = chat.client()
    ack = c.login(user, device=unique_name("look"))
    c.close()
    return ack["groups"]


def roles_seen_by(chat, user) -> dict[int, str]:
    """The roles of the user's only group, as a login on another device lists them."""
    (group,) = groups_seen_by(chat, user)
    return {u["id"]: u["role"] for u in group["users"]}


def test_a_creator_makes_an_admin_who_kicks_normal_members_only(chat):
    alice, bob, carol, dave = chat.users(4)
    ca, cb, cc, cd = chat.online_all(alice, bob, carol, dave)
    gid, _ = chat.make_group(ca, cb, cc, cd)
    cb.err({"msgid": 24, "groupid": gid, "userid": carol.id, "role": "admin"}, 12)
    assert ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})["reply_to"] == 24
    cc.err({"msgid": 23, "groupid": gid, "userid": dave.id}, 12)  # normal: not permitted
    cb.err({"msgid": 23, "groupid": gid, "userid": alice.id}, 12)  # above the admin
    ca.err({"msgid": 23, "groupid": gid, "userid": alice.id}, 12)  # oneself
    cb.ok({"msgid": 23, "groupid": gid, "userid": dave.id})
    assert roles_seen_by(chat, alice) == {alice.id: "creator", bob.id: "admin", carol.id: "normal"}
    cd.err({"msgid": 10, "groupid": gid, "msg": "still here?"}, 6)  # kicked: not a member


def test_naming_errors_follow_the_protocol(chat):
    alice, bob, stranger = chat.users(3)
    ca, cs = chat.online_all(alice, stranger)
    gid, _ = chat.make_group(ca)
    ca.err({"msgid": 23, "groupid": UNKNOWN_ID, "userid": bob.id}, 5)
    cs.err({"msgid": 23, "groupid": gid, "userid": alice.id}, 6)  # the actor is no member
    ca.err({"msgid": 23, "groupid": gid, "userid": UNKNOWN_ID}, 4)
    ca.err({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 0}, 6)  # not a member
    ca.err({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "creator"}, 7)
    ca.err({"msgid": 24, "groupid": gid, "userid": bob.id}, 7, field="role")
    ca.err({"msgid": 27, "groupid": gid, "userid": bob.id, "until": "soon"}, 7, field="until")
    ca.err({"msgid": 28, "groupid": gid}, 7)
    ca.err({"msgid": 28, "groupid": gid, "groupname": ""}, 7)


def test_a_muted_member_gets_errno_13_with_until_and_0_unmutes(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    until = int(time.time() * 1000) + 60_000
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": until})
    refused = cb.err({"msgid": 10, "groupid": gid, "msg": "let me talk"}, 13)
    assert refused["until"] == until, refused
    cb.err({"msgid": 27, "groupid": gid, "userid": alice.id, "until": 0}, 12)
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 0})
    sent = cb.ok({"msgid": 10, "groupid": gid, "msg": "thanks"})
    ca.expect({"msgid": 10, "msg_id": sent["msg_id"]})
    # a mute already past lets the member speak
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 1})
    cb.ok({"msgid": 10, "groupid": gid, "msg": "past"})


def test_transfer_then_dissolve_frees_the_name(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, name = chat.make_group(ca, cb)
    cb.err({"msgid": 25, "groupid": gid, "userid": bob.id}, 12)
    ca.ok({"msgid": 25, "groupid": gid, "userid": bob.id})
    assert roles_seen_by(chat, alice) == {alice.id: "admin", bob.id: "creator"}
    ca.err({"msgid": 26, "groupid": gid}, 12)
    cb.ok({"msgid": 26, "groupid": gid})
    ca.err({"msgid": 10, "groupid": gid, "msg": "gone?"}, 5)
    assert groups_seen_by(chat, alice) == []
    again = ca.ok({"msgid": 8, "groupname": name, "groupdesc": ""})["groupid"]
    assert again != gid


def test_update_renames_and_describes_and_a_taken_name_is_errno_1(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    _, taken = chat.make_group(cb)
    cb.err({"msgid": 28, "groupid": gid, "groupname": unique_name("g")}, 12)
    ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})
    new_name = unique_name("g")
    cb.ok({"msgid": 28, "groupid": gid, "groupname": new_name})
    ca.ok({"msgid": 28, "groupid": gid, "groupdesc": "about us"})
    ca.err({"msgid": 28, "groupid": gid, "groupname": taken}, 1)
    group = next(g for g in groups_seen_by(chat, alice) if g["id"] == gid)
    assert (group["groupname"], group["groupdesc"]) == (new_name, "about us")


def test_a_leaving_creator_passes_the_role_on_and_alone_dissolves(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, name = chat.make_group(ca, cb, cc)
    ca.ok({"msgid": 24, "groupid": gid, "userid": carol.id, "role": "admin"})
    ca.ok({"msgid": 17, "groupid": gid})
    assert roles_seen_by(chat, bob) == {bob.id: "normal", carol.id: "creator"}
    cb.ok({"msgid": 17, "groupid": gid})
    cc.ok({"msgid": 17, "groupid": gid})  # alone: the group goes
    cc.err({"msgid": 9, "groupid": gid}, 5)
    ca.ok({"msgid": 8, "groupname": name, "groupdesc": ""})


def test_abuse_a_stranger_can_do_nothing_to_a_group_and_its_members_keep_chatting(chat):
    alice, bob, stranger = chat.users(3)
    ca, cb, cs = chat.online_all(alice, bob, stranger)
    gid, name = chat.make_group(ca, cb)
    # Every way a stranger might try to run a group they are not in, and a normal member too.
    for client, errno in ((cs, 6), (cb, 12)):
        for _ in range(20):
            for request in (
                {"msgid": 23, "groupid": gid, "userid": alice.id},
                {"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"},
                {"msgid": 25, "groupid": gid, "userid": bob.id},
                {"msgid": 26, "groupid": gid},
                {"msgid": 27, "groupid": gid, "userid": alice.id, "until": 2**62},
                {"msgid": 28, "groupid": gid, "groupname": unique_name("x")},
            ):
                if client is cb and request["msgid"] == 24:
                    continue
                client.err(request, errno)
    start = time.perf_counter()
    sent = cb.ok({"msgid": 10, "groupid": gid, "msg": "business as usual"})
    ca.expect({"msgid": 10, "msg_id": sent["msg_id"]})
    print(f"a member's group message after {2 * 20 * 6} refused admin requests: "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")
    (group,) = groups_seen_by(chat, alice)
    assert (group["groupname"], {u["id"]: u["role"] for u in group["users"]}) == (
        name, {alice.id: "creator", bob.id: "normal"}
    )


def test_the_legacy_dialect_has_no_group_administration(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    gid, _ = chat.make_group(ca)
    legacy = chat.online(bob, legacy=True)
    legacy.send({"msgid": 9, "groupid": gid})
    legacy.send({"msgid": 26, "groupid": gid})
    legacy.assert_silent(0.5)
    (group,) = groups_seen_by(chat, alice)
    assert group["id"] == gid


# --------------------------------------------------------------------------- GROUP_EVENT (29)


def test_every_member_gets_each_event_with_its_fields_and_pos(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb)
    cc.ok({"msgid": 9, "groupid": gid})
    for c in (ca, cb, cc):
        joined = c.expect({"msgid": 29, "event": "joined", "userid": carol.id})
        assert joined["by"] == carol.id and joined["groupid"] == gid and joined["pos"] > 0
    until = int(time.time() * 1000) + 60_000
    ca.ok({"msgid": 24, "groupid": gid, "userid": bob.id, "role": "admin"})
    cb.ok({"msgid": 27, "groupid": gid, "userid": carol.id, "until": until})
    cb.ok({"msgid": 28, "groupid": gid, "groupdesc": "rules"})
    for c in (ca, cb, cc):
        role = c.expect({"msgid": 29, "event": "role"})
        assert (role["userid"], role["by"], role["role"]) == (bob.id, alice.id, "admin")
        muted = c.expect({"msgid": 29, "event": "muted"})
        assert (muted["userid"], muted["by"], muted["until"]) == (carol.id, bob.id, until)
        updated = c.expect({"msgid": 29, "event": "updated"})
        assert (updated["userid"], updated["by"], updated["groupdesc"]) == (bob.id, bob.id, "rules")
        assert role["pos"] < muted["pos"] < updated["pos"]


def test_a_kicked_member_is_told_and_then_hears_nothing_of_the_group(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb, cc)
    ca.ok({"msgid": 23, "groupid": gid, "userid": carol.id})
    for c in (ca, cb, cc):
        kicked = c.expect({"msgid": 29, "event": "kicked"})
        assert (kicked["userid"], kicked["by"]) == (carol.id, alice.id)
    cc.backlog.clear()  # what came before the kick (the joins)
    sent = cb.ok({"msgid": 10, "groupid": gid, "msg": "carol is gone"})
    ca.expect({"msgid": 10, "msg_id": sent["msg_id"]})
    ca.ok({"msgid": 28, "groupid": gid, "groupname": unique_name("g")})
    cc.assert_silent(0.5, pattern=lambda f: f.get("groupid") == gid and f["msgid"] in (10, 29))


def test_dissolved_reaches_every_member_and_a_member_away_finds_it_at_login(chat):
    alice, bob, carol = chat.users(3)
    ca, cb, cc = chat.online_all(alice, bob, carol)
    gid, _ = chat.make_group(ca, cb, cc)
    cc.logout()
    ca.ok({"msgid": 26, "groupid": gid})
    for c in (ca, cb):
        gone = c.expect({"msgid": 29, "event": "dissolved"})
        assert (gone["groupid"], gone["userid"], gone["by"]) == (gid, alice.id, alice.id)
    back = chat.online(carol)
    waiting = [m for m in back.ack["offlinemsg"] if m["msgid"] == 29]
    assert [(m["event"], m["groupid"]) for m in waiting] == [("dissolved", gid)]
    assert back.ack["groups"] == []


def test_a_creator_leaving_gives_transfer_then_left(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    ca.ok({"msgid": 17, "groupid": gid})
    for c in (ca, cb):
        transfer = c.expect({"msgid": 29, "event": "transfer"})
        left = c.expect({"msgid": 29, "event": "left"})
        assert (transfer["userid"], transfer["by"]) == (bob.id, alice.id)
        assert transfer["role"] == "creator"
        assert (left["userid"], left["by"]) == (alice.id, alice.id)
        assert transfer["pos"] < left["pos"]


def test_history_of_a_group_includes_its_events(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    gid, _ = chat.make_group(ca, cb)
    ca.ok({"msgid": 10, "groupid": gid, "msg": "hello"})
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 1})
    page = cb.ok({"msgid": 21, "groupid": gid})
    assert [m["msgid"] for m in page["msgs"]] == [29, 10, 29]
    assert [m.get("event") for m in page["msgs"]] == ["joined", None, "muted"]


def test_a_legacy_session_never_receives_a_group_event(chat):
    alice, bob = chat.users(2)
    ca = chat.online(alice)
    gid, _ = chat.make_group(ca)
    legacy = chat.online(bob, legacy=True)
    legacy.send({"msgid": 9, "groupid": gid})  # the legacy dialect gets no ACK for it
    ca.expect({"msgid": 29, "event": "joined", "userid": bob.id})
    ca.ok({"msgid": 27, "groupid": gid, "userid": bob.id, "until": 1})
    sent = ca.ok({"msgid": 10, "groupid": gid, "msg": "for the old client"})["msg_id"]
    got = legacy.expect({"msgid": 10})
    assert got["msg"] == "for the old client" and "msg_id" not in got and sent > 0
    legacy.assert_silent(0.5)
    legacy.close()
    # the events wait for a modern login on that device
    modern = chat.client()
    ack = modern.login(bob, device="legacy")
    events = [m["event"] for m in ack["offlinemsg"] if m["msgid"] == 29]
    assert events == ["joined", "muted"]


def test_abuse_joining_and_leaving_at_full_speed_is_capped_and_members_keep_service(chat):
    alice, bob, spammer = chat.users(3)
    ca, cb, cs = chat.online_all(alice, bob, spammer)
    gid, _ = chat.make_group(ca, cb)
    # Each join or leave puts a GROUP_EVENT in every member's inbox: 60 a minute, then errno 9.
    for i in range(60):
        cs.ok({"msgid": 9 if i % 2 == 0 else 17, "groupid": gid})
    for _ in range(20):
        cs.err({"msgid": 9, "groupid": gid}, 9)
    start = time.perf_counter()
    sent = cb.ok({"msgid": 10, "groupid": gid, "msg": "still here"})
    ca.expect({"msgid": 10, "msg_id": sent["msg_id"]})
    print(f"a member's group message beside a capped join/leave spammer: "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")
    told = [f for f in ca.drain(0.3) if f.get("msgid") == 29 and f["userid"] == spammer.id]
    assert len(told) == 60  # every change that was made was told, and no refused one
