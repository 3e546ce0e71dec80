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
