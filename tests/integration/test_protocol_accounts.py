"""Accounts, sessions and the request envelope: REG, LOGIN, LOGINOUT, PING, errno rules."""

from __future__ import annotations

import random
import re
import uuid

import pytest

pytestmark = pytest.mark.integration

INVALID_LOGIN = "id or password is invalid!"
UNKNOWN_ID = 2_000_000_000  # no test registers two billion users


def fresh(prefix: str, length: int) -> str:
    """A unique name of exactly `length` characters (length >= 12)."""
    base = prefix + uuid.uuid4().hex
    return (base * (length // len(base) + 1))[:length]


def cjk(length: int) -> str:
    """`length` random CJK characters (3 UTF-8 bytes each)."""
    return "".join(chr(random.randrange(0x4E00, 0x9FA0)) for _ in range(length))


# --------------------------------------------------------------------------- REG


def test_register_returns_a_new_positive_id(chat):
    c = chat.client()
    reply = c.request({"msgid": 4, "name": fresh("r", 20), "password": "s3cret", "seq": 41})
    assert reply["msgid"] == 5 and reply["errno"] == 0 and reply["seq"] == 41, reply
    assert type(reply["id"]) is int and reply["id"] > 0
    other = c.request({"msgid": 4, "name": fresh("r", 20), "password": "s3cret"})
    assert other["errno"] == 0 and other["id"] != reply["id"], other


@pytest.mark.parametrize("kind", ["1-char", "50-ascii", "50-cjk"])
def test_register_accepts_names_of_1_to_50_characters(chat, kind):
    c = chat.client()
    for _attempt in range(5):  # a random one-character name may already be taken
        name = {"1-char": cjk(1), "50-ascii": fresh("n", 50), "50-cjk": cjk(50)}[kind]
        reply = c.request({"msgid": 4, "name": name, "password": "pw"})
        if reply["errno"] != 1:
            break
    assert reply["errno"] == 0, reply
    ack = c.request({"msgid": 1, "id": reply["id"], "password": "pw"})
    assert ack["errno"] == 0 and ack["name"] == name, ack


@pytest.mark.parametrize("kind", ["empty", "51-ascii", "51-cjk"])
def test_register_refuses_names_outside_1_to_50_characters(chat, kind):
    name = {"empty": "", "51-ascii": fresh("n", 51), "51-cjk": cjk(51)}[kind]
    chat.client().err({"msgid": 4, "name": name, "password": "pw"}, 7)


@pytest.mark.parametrize("length", [1, 128])
def test_register_accepts_passwords_of_1_to_128_characters(chat, length):
    password = cjk(length)
    user = chat.user(password=password)
    ack = chat.client().request({"msgid": 1, "id": user.id, "password": password})
    assert ack["errno"] == 0, ack


@pytest.mark.parametrize(
    "password", ["", "x" * 129, "密" * 129], ids=["empty", "129-ascii", "129-cjk"]
)
def test_register_refuses_passwords_outside_1_to_128_characters(chat, password):
    chat.client().err({"msgid": 4, "name": fresh("p", 20), "password": password}, 7)


def test_every_character_of_a_long_password_counts(chat):
    password = "a" * 127 + "b"
    user = chat.user(password=password)
    c = chat.client()
    reply = c.request({"msgid": 1, "id": user.id, "password": "a" * 127 + "c"})
    assert reply["msgid"] == 2 and reply["errno"] == 1, reply
    assert reply["errmsg"] == INVALID_LOGIN


def test_register_refuses_a_taken_name_with_errno_1(chat):
    user = chat.user()
    reply = chat.client().err({"msgid": 4, "name": user.name, "password": "other"}, 1)
    assert reply["msgid"] == 5


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"msgid": 4, "name": 5, "password": "pw"}, "name"),
        ({"msgid": 4, "name": None, "password": "pw"}, "name"),
        ({"msgid": 4, "name": ["x"], "password": "pw"}, "name"),
        ({"msgid": 4, "password": "pw"}, "name"),
        ({"msgid": 4, "name": "NAME", "password": 1234}, "password"),
        ({"msgid": 4, "name": "NAME", "password": True}, "password"),
        ({"msgid": 4, "name": "NAME"}, "password"),
    ],
    ids=[
        "name-int",
        "name-null",
        "name-list",
        "name-missing",
        "password-int",
        "password-bool",
        "password-missing",
    ],
)
def test_register_with_a_missing_or_wrongly_typed_field_is_errno_7_naming_it(chat, request_, field):
    if request_.get("name") == "NAME":
        request_ = {**request_, "name": fresh("t", 20)}
    chat.client().err(request_, 7, field=field)


# --------------------------------------------------------------------------- LOGIN


def test_login_by_id_returns_the_full_ack(chat):
    user = chat.user()
    c = chat.client()
    ack = c.request({"msgid": 1, "id": user.id, "password": user.password, "seq": 9})
    assert ack["msgid"] == 2 and ack["errno"] == 0 and ack["seq"] == 9, ack
    assert ack["id"] == user.id and ack["name"] == user.name
    for key in ("friends", "groups", "offlinemsg", "friend_requests"):
        assert ack[key] == [], (key, ack)


def test_login_by_name(chat):
    user = chat.user()
    ack = chat.client().request({"msgid": 1, "name": user.name, "password": user.password})
    assert ack["errno"] == 0 and ack["id"] == user.id and ack["name"] == user.name, ack


def test_login_id_wins_over_name(chat):
    alice, bob = chat.users(2)
    ack = chat.client().request(
        {"msgid": 1, "id": alice.id, "name": bob.name, "password": alice.password}
    )
    assert ack["errno"] == 0 and ack["id"] == alice.id and ack["name"] == alice.name, ack
    # the name is not even tried when the id is given
    reply = chat.client().request(
        {"msgid": 1, "id": UNKNOWN_ID, "name": bob.name, "password": bob.password}
    )
    assert reply["errno"] == 1 and reply["errmsg"] == INVALID_LOGIN, reply


@pytest.mark.parametrize(
    "how", ["wrong-password", "unknown-id", "unknown-name", "wrong-password-by-name"]
)
def test_failed_login_is_errno_1_with_the_original_message(chat, how):
    user = chat.user()
    request_ = {
        "wrong-password": {"msgid": 1, "id": user.id, "password": user.password + "x"},
        "unknown-id": {"msgid": 1, "id": UNKNOWN_ID, "password": "x"},
        "unknown-name": {"msgid": 1, "name": fresh("nobody", 30), "password": "x"},
        "wrong-password-by-name": {"msgid": 1, "name": user.name, "password": "nope"},
    }[how]
    c = chat.client()
    reply = c.request(request_)
    assert reply["msgid"] == 2 and reply["errno"] == 1, reply
    assert reply["errmsg"] == INVALID_LOGIN
    # still not logged in
    c.err({"msgid": 6, "toid": user.id, "msg": "hi"}, 3)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"msgid": 1, "id": "ID", "password": "PW"}, "id"),
        ({"msgid": 1, "id": True, "password": "PW"}, "id"),
        ({"msgid": 1, "id": None, "password": "PW"}, "id"),
        ({"msgid": 1, "name": 5, "password": "PW"}, "name"),
        ({"msgid": 1, "id": "INT", "password": 123}, "password"),
        ({"msgid": 1, "id": "INT"}, "password"),
        ({"msgid": 1, "id": "INT", "password": "PW", "receipts": 1}, "receipts"),
        ({"msgid": 1, "id": "INT", "password": "PW", "receipts": "true"}, "receipts"),
    ],
    ids=[
        "id-string",
        "id-bool",
        "id-null",
        "name-int",
        "password-int",
        "password-missing",
        "receipts-int",
        "receipts-string",
    ],
)
def test_login_with_a_wrongly_typed_field_is_errno_7_naming_it(chat, request_, field):
    user = chat.user()
    fill = {"ID": str(user.id), "INT": user.id, "PW": user.password}
    request_ = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in request_.items()}
    c = chat.client()
    c.err(request_, 7, field=field)
    c.err({"msgid": 6, "toid": user.id, "msg": "hi"}, 3)  # and it did not log in


def test_login_without_id_or_name_is_errno_7(chat):
    reply = chat.client().err({"msgid": 1, "password": "pw"}, 7)
    assert re.search(r"\b(id|name)\b", reply["errmsg"]), reply


def test_login_accepts_receipts_true_and_false(chat):
    user = chat.user()
    for flag in (True, False):
        c = chat.client()
        ack = c.request({"msgid": 1, "id": user.id, "password": user.password, "receipts": flag})
        assert ack["errno"] == 0, ack
        c.logout()


# --------------------------------------------------------------------------- takeover


def test_second_login_kicks_the_first_session(chat):
    alice, friend = chat.users(2)
    cf = chat.online(friend)
    first = chat.online(alice)
    chat.befriend(first, cf)

    second = chat.client()
    ack = second.login(alice)
    assert ack["id"] == alice.id
    assert {"id": friend.id, "name": friend.name, "state": "online"} in ack["friends"]

    kicked = first.expect({"msgid": 15})
    assert isinstance(kicked["errmsg"], str) and kicked["errmsg"]
    # friends see no PRESENCE for a takeover: alice never went offline
    cf.assert_silent(pattern={"msgid": 14})

    # the kicked connection stays open and logged out
    first.ok({"msgid": 16})
    first.err({"msgid": 6, "toid": friend.id, "msg": "ghost"}, 3)

    # messages for alice now reach the new session only
    reply = cf.ok({"msgid": 6, "toid": alice.id, "msg": "to the new session"})
    got = second.expect({"msgid": 6, "msg": "to the new session"})
    assert got["msg_id"] == reply["msg_id"]
    first.assert_silent(pattern={"msgid": 6})

    # the kicked connection may log in again, kicking the second one in turn
    first.login(alice)
    second.expect({"msgid": 15})
    cf.assert_silent(pattern={"msgid": 14})
    cf.ok({"msgid": 6, "toid": alice.id, "msg": "back again"})
    first.expect({"msgid": 6, "msg": "back again"})
    second.assert_silent(pattern={"msgid": 6})


def test_login_as_another_user_logs_the_connection_out_of_the_first(chat):
    alice, bob, friend = chat.users(3)
    cf = chat.online(friend)
    conn = chat.online(alice)
    chat.befriend(conn, cf)

    ack = conn.login(bob)
    assert ack["id"] == bob.id
    cf.expect({"msgid": 14, "id": alice.id, "state": "offline"})

    # the connection now speaks for bob
    conn.ok({"msgid": 6, "toid": friend.id, "msg": "I am bob now"})
    got = cf.expect({"msgid": 6, "msg": "I am bob now"})
    assert got["id"] == bob.id and got["name"] == bob.name
    # ... and alice is offline: her messages wait for her next login
    cf.ok({"msgid": 6, "toid": alice.id, "msg": "for alice"})
    conn.assert_silent(pattern={"msgid": 6})
    later = chat.online(alice)
    assert [m["msg"] for m in later.ack["offlinemsg"]] == ["for alice"]


# --------------------------------------------------------------------------- LOGINOUT, PING


def test_loginout_keeps_the_connection_open_and_allows_a_new_login(chat):
    alice, bob = chat.users(2)
    c = chat.online(alice)
    reply = c.request({"msgid": 3, "seq": 77})
    assert reply["msgid"] == 11 and reply["reply_to"] == 3, reply
    assert reply["errno"] == 0 and reply["seq"] == 77, reply
    c.ok({"msgid": 16})
    c.err({"msgid": 6, "toid": bob.id, "msg": "x"}, 3)
    c.login(alice)
    c.ok({"msgid": 6, "toid": bob.id, "msg": "x"})


def test_loginout_when_not_logged_in_is_errno_3(chat):
    user = chat.user()
    c = chat.client()
    c.err({"msgid": 3}, 3)
    c.login(user)
    c.logout()
    c.err({"msgid": 3}, 3)


def test_loginout_with_own_id_works_and_with_another_id_is_errno_10(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.err({"msgid": 3, "id": bob.id}, 10)
    # neither alice nor bob was logged out
    ca.ok({"msgid": 6, "toid": bob.id, "msg": "still in"})
    cb.expect({"msgid": 6, "msg": "still in"})
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "me too"})
    ca.expect({"msgid": 6, "msg": "me too"})
    ca.ok({"msgid": 3, "id": alice.id})
    ca.err({"msgid": 6, "toid": bob.id, "msg": "x"}, 3)


def test_ping_works_before_and_after_login(chat):
    user = chat.user()
    c = chat.client()
    reply = c.request({"msgid": 16, "seq": 5})
    assert reply["msgid"] == 11 and reply["reply_to"] == 16 and reply["errno"] == 0, reply
    assert reply["seq"] == 5
    c.login(user)
    c.ok({"msgid": 16})


# --------------------------------------------------------------------------- envelope errors

NEEDS_LOGIN = [
    pytest.param({"msgid": 3}, id="LOGINOUT"),
    pytest.param({"msgid": 6, "toid": "USER", "msg": "hi"}, id="ONE_CHAT"),
    pytest.param({"msgid": 7, "friendid": "USER"}, id="ADD_FRIEND"),
    pytest.param({"msgid": 8, "groupname": "GROUPNAME", "groupdesc": ""}, id="CREATE_GROUP"),
    pytest.param({"msgid": 9, "groupid": 1}, id="ADD_GROUP"),
    pytest.param({"msgid": 10, "groupid": 1, "msg": "hi"}, id="GROUP_CHAT"),
    pytest.param({"msgid": 13, "friendid": "USER", "accept": True}, id="FRIEND_RESPONSE"),
    pytest.param({"msgid": 17, "groupid": 1}, id="LEAVE_GROUP"),
    pytest.param({"msgid": 18, "friendid": "USER"}, id="REMOVE_FRIEND"),
    pytest.param({"msgid": 19, "msg_ids": [1]}, id="RECEIPT"),
]


def _fill(request_: dict, user_id: int) -> dict:
    out = {}
    for k, v in request_.items():
        if v == "USER":
            v = user_id
        elif v == "GROUPNAME":
            v = fresh("g", 20)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def someone(module_chat):
    """A registered user, for requests that only need a real user id."""
    return module_chat.user()


@pytest.mark.parametrize("request_", NEEDS_LOGIN)
def test_requests_other_than_login_reg_ping_need_a_login(chat, someone, request_):
    c = chat.client()
    c.err(_fill(request_, someone.id), 3)


def test_unknown_msgid_is_errno_7_with_reply_to_it(chat):
    user = chat.user()
    c = chat.client()
    reply = c.request({"msgid": 99, "seq": 3})
    assert reply["msgid"] == 11 and reply["reply_to"] == 99 and reply["errno"] == 7, reply
    assert reply["seq"] == 3 and reply["errmsg"]
    c.login(user)
    reply = c.request({"msgid": 99, "id": user.id})
    assert reply["reply_to"] == 99 and reply["errno"] == 7, reply


@pytest.mark.parametrize("msgid", [0, -1, 2, 5, 11, 12, 14, 15, 20, 1000])
def test_msgids_that_are_not_requests_are_errno_7(chat, someone, msgid):
    c = chat.client()
    reply = c.request({"msgid": msgid})
    assert reply["msgid"] == 11 and reply["reply_to"] == msgid and reply["errno"] == 7, reply
    c.login(someone)
    reply = c.request({"msgid": msgid})
    assert reply["msgid"] == 11 and reply["reply_to"] == msgid and reply["errno"] == 7, reply


@pytest.mark.parametrize("seq", [0, -7, 1, 2**31 + 5, 2**53 + 1])
def test_seq_is_echoed_exactly(chat, seq):
    c = chat.client()
    reply = c.request({"msgid": 16, "seq": seq})
    assert reply["seq"] == seq and type(reply["seq"]) is int


def test_every_request_gets_exactly_one_reply_echoing_its_seq(chat):
    alice, bob = chat.users(2)
    c = chat.client()
    requests = [
        {"msgid": 16},
        {"msgid": 99},
        {"msgid": 6, "toid": bob.id, "msg": "too early"},  # errno 3
        {"msgid": 4, "name": bob.name, "password": "x"},  # errno 1
        {"msgid": 1, "id": alice.id, "password": alice.password},
        {"msgid": 6, "toid": bob.id, "msg": "hi"},
        {"msgid": 6, "toid": UNKNOWN_ID, "msg": "hi"},
        {"msgid": 6, "toid": bob.id, "msg": ""},
        {"msgid": 7, "friendid": alice.id},
        {"msgid": 8, "groupname": fresh("g", 20)},
        {"msgid": 9, "groupid": UNKNOWN_ID},
        {"msgid": 10, "groupid": UNKNOWN_ID, "msg": "x"},
        {"msgid": 13, "friendid": bob.id, "accept": False},
        {"msgid": 17, "groupid": UNKNOWN_ID},
        {"msgid": 18, "friendid": bob.id},
        {"msgid": 19, "msg_ids": []},
        {"msgid": 6, "id": bob.id, "toid": bob.id, "msg": "spoof"},
        {"msgid": 3},
    ]
    expected_reply = {1: 2, 4: 5}
    for r in requests:
        seq = c.next_seq()
        reply = c.request({**r, "seq": seq})
        assert reply["msgid"] == expected_reply.get(r["msgid"], 11), (r, reply)
        assert reply["seq"] == seq
        if reply["msgid"] == 11:
            assert reply["reply_to"] == r["msgid"], (r, reply)
    c.assert_silent()


def test_unknown_fields_are_ignored(chat):
    name = fresh("x", 20)
    c = chat.client()
    reg = c.request({"msgid": 4, "name": name, "password": "pw", "extra": {"a": [1, 2]}})
    assert reg["errno"] == 0, reg
    c.ok({"msgid": 16, "what": "ever", "n": None})
    ack = c.request(
        {
            "msgid": 1,
            "name": name,
            "password": "pw",
            "time": "2026-01-01 00:00:00",
            "client": "test",
        }
    )
    assert ack["errno"] == 0 and ack["id"] == reg["id"], ack
    bob = chat.user()
    c.ok({"msgid": 6, "toid": bob.id, "msg": "hi", "time": "1999-01-01 00:00:00", "nonsense": True})


def test_sending_own_id_and_any_name_is_accepted(chat):
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    ca.ok({"msgid": 6, "id": alice.id, "name": "not-alice", "toid": bob.id, "msg": "orig"})
    got = cb.expect({"msgid": 6, "msg": "orig"})
    assert got["id"] == alice.id and got["name"] == alice.name


# --------------------------------------------------------------------------- errno 10


@pytest.fixture
def pair_with_group(chat):
    """alice and bob online and friends; bob owns a group alice is in; carol is offline."""
    alice, bob, carol = chat.users(3)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    gid, _ = chat.make_group(cb, ca)
    return chat, ca, cb, alice, bob, carol, gid


IMPERSONATIONS = [
    pytest.param(lambda a, b, c, g: {"msgid": 6, "toid": c.id, "msg": "spoof"}, id="ONE_CHAT"),
    pytest.param(lambda a, b, c, g: {"msgid": 7, "friendid": c.id}, id="ADD_FRIEND"),
    pytest.param(lambda a, b, c, g: {"msgid": 8, "groupname": fresh("g", 20)}, id="CREATE_GROUP"),
    pytest.param(lambda a, b, c, g: {"msgid": 9, "groupid": g}, id="ADD_GROUP"),
    pytest.param(lambda a, b, c, g: {"msgid": 10, "groupid": g, "msg": "spoof"}, id="GROUP_CHAT"),
    pytest.param(
        lambda a, b, c, g: {"msgid": 13, "friendid": c.id, "accept": True}, id="FRIEND_RESPONSE"
    ),
    pytest.param(lambda a, b, c, g: {"msgid": 17, "groupid": g}, id="LEAVE_GROUP"),
    pytest.param(lambda a, b, c, g: {"msgid": 18, "friendid": a.id}, id="REMOVE_FRIEND"),
    pytest.param(lambda a, b, c, g: {"msgid": 19, "msg_ids": [1]}, id="RECEIPT"),
    pytest.param(lambda a, b, c, g: {"msgid": 3}, id="LOGINOUT"),
    pytest.param(lambda a, b, c, g: {"msgid": 16}, id="PING"),
]


@pytest.mark.parametrize("build", IMPERSONATIONS)
def test_an_id_that_is_not_the_logged_in_user_is_errno_10(pair_with_group, build):
    chat, ca, cb, alice, bob, carol, gid = pair_with_group
    # bob's connection claims to be alice
    cb.err({**build(alice, bob, carol, gid), "id": alice.id}, 10)
    # nothing happened: bob is still logged in, still alice's friend, still in his group
    ca.assert_silent(pattern=lambda f: f["msgid"] in (6, 10, 12, 13, 14))
    cb.ok({"msgid": 6, "toid": alice.id, "msg": "still bob"})
    got = ca.expect({"msgid": 6, "msg": "still bob"})
    assert got["id"] == bob.id
    cb.ok({"msgid": 10, "groupid": gid, "msg": "still in the group"})
    ca.expect({"msgid": 10, "msg": "still in the group"})
    relog = chat.online(alice)
    assert [f["id"] for f in relog.ack["friends"]] == [bob.id]
    assert relog.ack["friend_requests"] == []


FAULT_ORDER = [
    # (logged in?, request builder, expected errno)
    pytest.param(False, lambda me, o: {"msgid": 6, "toid": "x", "msg": "m"}, 7, id="7-before-3"),
    pytest.param(
        False, lambda me, o: {"msgid": 6, "toid": o, "msg": "m", "id": o}, 3, id="3-before-10"
    ),
    pytest.param(
        False, lambda me, o: {"msgid": 6, "toid": UNKNOWN_ID, "msg": "m"}, 3, id="3-before-4"
    ),
    pytest.param(
        False, lambda me, o: {"msgid": 10, "groupid": UNKNOWN_ID, "msg": "m"}, 3, id="3-before-5"
    ),
    pytest.param(
        True, lambda me, o: {"msgid": 6, "toid": "x", "msg": "m", "id": o}, 7, id="7-before-10"
    ),
    pytest.param(
        True, lambda me, o: {"msgid": 6, "toid": o, "msg": "m", "id": str(me)}, 7, id="id-typed-7"
    ),
    pytest.param(
        True,
        lambda me, o: {"msgid": 6, "toid": UNKNOWN_ID, "msg": "m", "id": o},
        10,
        id="10-before-4",
    ),
    pytest.param(
        True,
        lambda me, o: {"msgid": 10, "groupid": UNKNOWN_ID, "msg": "m", "id": o},
        10,
        id="10-before-5",
    ),
    pytest.param(
        True, lambda me, o: {"msgid": 9, "groupid": UNKNOWN_ID, "id": o}, 10, id="10-before-5-join"
    ),
    pytest.param(
        True, lambda me, o: {"msgid": 6, "toid": UNKNOWN_ID, "msg": ""}, 7, id="7-before-4"
    ),
    pytest.param(True, lambda me, o: {"msgid": 10, "groupid": UNKNOWN_ID}, 7, id="7-before-5"),
    pytest.param(
        True,
        lambda me, o: {"msgid": 7, "friendid": UNKNOWN_ID, "id": o},
        10,
        id="10-before-4-friend",
    ),
]


@pytest.fixture(scope="module")
def fault_pair(module_chat):
    """Two users and a connection logged in as the first; the requests below all fail."""
    me, other = module_chat.users(2)
    return me, other, module_chat.online(me)


@pytest.mark.parametrize(("logged_in", "build", "errno"), FAULT_ORDER)
def test_the_first_fault_in_the_documented_order_is_reported(
    chat, fault_pair, logged_in, build, errno
):
    me, other, conn = fault_pair
    c = conn if logged_in else chat.client()
    c.err(build(me.id, other.id), errno)


# --------------------------------------------------------------------------- no coercion


@pytest.fixture(scope="module")
def typing_context(module_chat):
    """alice online, owning a group; bob registered. The requests below all fail."""
    alice, bob = module_chat.users(2)
    ca = module_chat.online(alice)
    gid, _ = module_chat.make_group(ca)
    return ca, alice, bob, gid


WRONG_TYPES = [
    ({"msgid": 6, "toid": "BOB_STR", "msg": "m"}, "toid"),
    ({"msgid": 6, "toid": True, "msg": "m"}, "toid"),
    ({"msgid": 6, "toid": None, "msg": "m"}, "toid"),
    ({"msgid": 6, "msg": "m"}, "toid"),
    ({"msgid": 6, "toid": "BOB", "msg": 5}, "msg"),
    ({"msgid": 6, "toid": "BOB", "msg": ["m"]}, "msg"),
    ({"msgid": 6, "toid": "BOB"}, "msg"),
    ({"msgid": 6, "toid": "BOB", "msg": "m", "id": "ME_STR"}, "id"),
    ({"msgid": 7, "friendid": "BOB_STR"}, "friendid"),
    ({"msgid": 7}, "friendid"),
    ({"msgid": 8, "groupname": 5}, "groupname"),
    ({"msgid": 8}, "groupname"),
    ({"msgid": 8, "groupname": "NEWGROUP", "groupdesc": 5}, "groupdesc"),
    ({"msgid": 9, "groupid": "GID_STR"}, "groupid"),
    ({"msgid": 9}, "groupid"),
    ({"msgid": 10, "groupid": "GID_STR", "msg": "m"}, "groupid"),
    ({"msgid": 10, "groupid": "GID", "msg": 5}, "msg"),
    ({"msgid": 10, "groupid": "GID"}, "msg"),
    ({"msgid": 13, "friendid": "BOB_STR", "accept": True}, "friendid"),
    ({"msgid": 13, "friendid": "BOB", "accept": 1}, "accept"),
    ({"msgid": 13, "friendid": "BOB", "accept": "true"}, "accept"),
    ({"msgid": 13, "friendid": "BOB", "accept": None}, "accept"),
    ({"msgid": 13, "friendid": "BOB"}, "accept"),
    ({"msgid": 17, "groupid": "GID_STR"}, "groupid"),
    ({"msgid": 17}, "groupid"),
    ({"msgid": 18, "friendid": "BOB_STR"}, "friendid"),
    ({"msgid": 18}, "friendid"),
    ({"msgid": 19, "msg_ids": "1"}, "msg_ids"),
    ({"msgid": 19, "msg_ids": 1}, "msg_ids"),
    ({"msgid": 19, "msg_ids": ["1"]}, "msg_ids"),
    ({"msgid": 19, "msg_ids": [True]}, "msg_ids"),
    ({"msgid": 19, "msg_ids": [1.5]}, "msg_ids"),
    ({"msgid": 19}, "msg_ids"),
    ({"msgid": 3, "id": "ME_STR"}, "id"),
]


@pytest.mark.parametrize(
    ("request_", "field"),
    [pytest.param(r, f, id=f"{r['msgid']}-{f}-{i}") for i, (r, f) in enumerate(WRONG_TYPES)],
)
def test_missing_or_wrongly_typed_field_is_errno_7_naming_it(chat, typing_context, request_, field):
    ca, alice, bob, gid = typing_context
    fill = {
        "BOB": bob.id,
        "BOB_STR": str(bob.id),
        "GID": gid,
        "GID_STR": str(gid),
        "ME_STR": str(alice.id),
        "NEWGROUP": fresh("g", 20),
    }
    filled = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in request_.items()}
    ca.err(filled, 7, field=field)
    ca.ok({"msgid": 16})  # still logged in and served
