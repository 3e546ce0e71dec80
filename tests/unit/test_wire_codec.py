"""The wire codec: strict decoding of requests, and the frames for results, errors and events."""

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.wire.codec import (
    MAX_OFFLINE_IN_LOGIN_ACK,
    BadRequest,
    Dialect,
    Request,
    decode,
    encode_bad_request,
    encode_error,
    encode_event,
    encode_frame_too_large,
    encode_result,
)
from chatserver.adapters.wire.errors import errno_and_message
from chatserver.adapters.wire.framing import FrameSplitter
from chatserver.application.commands import (
    AddFriend,
    AnswerFriend,
    Command,
    CreateGroup,
    JoinGroup,
    LeaveGroup,
    Login,
    Logout,
    Ping,
    Receipt,
    Register,
    RemoveFriend,
    SendDirectMessage,
    SendGroupMessage,
)
from chatserver.application.results import (
    Contact,
    Done,
    GroupCreated,
    GroupMemberView,
    GroupView,
    HistoryPage,
    LoggedIn,
    MessageAccepted,
    Registered,
    Result,
    Synced,
)
from chatserver.domain import errors
from chatserver.domain.groups import Group, Role
from chatserver.domain.messages import (
    Delivery,
    DirectMessage,
    Event,
    FriendAnswer,
    FriendRequestNotice,
    GroupMessage,
    Kept,
    KickedNotice,
    PresenceNotice,
)
from chatserver.domain.users import User

MODERN, LEGACY = Dialect.MODERN, Dialect.LEGACY
TS = 1795735800000


def frame(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def local_time(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms // 1000))


def one(frames: list[bytes]) -> dict[str, Any]:
    assert len(frames) == 1
    return load(frames[0])


def load(data: bytes | None) -> dict[str, Any]:
    assert data is not None
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    body = orjson.loads(data)
    assert isinstance(body, dict)
    return body


# --- decoding: every command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "command"),
    [
        ({"msgid": 1, "id": 7, "password": "pw"}, Login(password="pw", user_id=7)),
        ({"msgid": 1, "name": "bo", "password": "pw"}, Login(password="pw", name="bo")),
        (
            {"msgid": 1, "id": 7, "name": "bo", "password": "pw", "receipts": True},
            Login(password="pw", user_id=7, name="bo", receipts=True),
        ),
        ({"msgid": 3}, Logout()),
        ({"msgid": 4, "name": "alice", "password": "s3cret"}, Register("alice", "s3cret")),
        ({"msgid": 6, "toid": 2, "msg": "hi bob"}, SendDirectMessage(2, "hi bob")),
        ({"msgid": 7, "friendid": 3}, AddFriend(3)),
        ({"msgid": 8, "groupname": "g", "groupdesc": "d"}, CreateGroup("g", "d")),
        ({"msgid": 8, "groupname": "g"}, CreateGroup("g", "")),
        ({"msgid": 9, "groupid": 5}, JoinGroup(5)),
        ({"msgid": 10, "groupid": 5, "msg": "hi all"}, SendGroupMessage(5, "hi all")),
        ({"msgid": 13, "friendid": 3, "accept": False}, AnswerFriend(3, False)),
        ({"msgid": 16}, Ping()),
        ({"msgid": 17, "groupid": 5}, LeaveGroup(5)),
        ({"msgid": 18, "friendid": 3}, RemoveFriend(3)),
        ({"msgid": 19, "msg_ids": [1, 2, 3]}, Receipt((1, 2, 3))),
        ({"msgid": 19, "msg_ids": []}, Receipt(())),
    ],
)
def test_each_msgid_decodes_to_its_command(fields: dict[str, Any], command: Command) -> None:
    assert decode(frame(**fields)) == Request(fields["msgid"], None, command, None)


def test_the_dialect_follows_the_frame_splitter() -> None:
    assert Dialect.of(None) is MODERN
    assert Dialect.of(False) is MODERN
    assert Dialect.of(True) is LEGACY


def test_seq_is_kept_for_the_reply() -> None:
    request = decode(frame(msgid=16, seq=42))
    assert isinstance(request, Request)
    assert request.seq == 42


def test_unknown_fields_are_ignored() -> None:
    request = decode(frame(msgid=6, toid=2, msg="x", time="2026-01-01 00:00:00", name="alice"))
    assert request == Request(6, None, SendDirectMessage(2, "x"), None)


def test_the_id_on_other_requests_is_the_claimed_identity() -> None:
    assert decode(frame(msgid=6, id=1, toid=2, msg="x")) == Request(
        6, None, SendDirectMessage(2, "x"), 1
    )
    assert decode(frame(msgid=3, id=9)) == Request(3, None, Logout(), 9)
    assert decode(frame(msgid=16, id=9)) == Request(16, None, Ping(), 9)


def test_the_id_of_login_is_the_login_id_not_a_claim() -> None:
    request = decode(frame(msgid=1, id=7, password="pw"))
    assert isinstance(request, Request)
    assert request.claimed_id is None
    assert request.command == Login(password="pw", user_id=7)


def test_an_id_on_register_is_ignored() -> None:
    assert decode(frame(msgid=4, id=5, name="a", password="b")) == Request(
        4, None, Register("a", "b"), None
    )


def test_login_needs_an_id_or_a_name() -> None:
    bad = decode(frame(msgid=1, password="pw", seq=3))
    assert isinstance(bad, BadRequest)
    assert (bad.reply_to, bad.seq) == (1, 3)
    assert "id" in bad.message
    assert "name" in bad.message


def test_a_client_cannot_choose_whether_it_gets_notices() -> None:
    request = decode(frame(msgid=1, id=1, password="pw", notices=False))
    assert isinstance(request, Request)
    assert isinstance(request.command, Login)
    assert request.command.notices is True


def test_a_legacy_login_asks_for_chats_only() -> None:
    request = decode(frame(msgid=1, id=1, password="pw"), LEGACY)
    assert isinstance(request, Request)
    assert request.command == Login(password="pw", user_id=1, notices=False, device="legacy")


def test_length_rules_are_left_to_the_domain() -> None:
    request = decode(frame(msgid=6, toid=2, msg=""))
    assert request == Request(6, None, SendDirectMessage(2, ""), None)


# --- decoding: malformed frames ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b'{"msgid":6,}', b"\xff\xfe", b'"\\ud800"', b"{}{}", b"NaN"],
)
def test_bad_json_is_answered_with_reply_to_zero(data: bytes) -> None:
    assert decode(data) == BadRequest(0, None, "bad JSON")


@pytest.mark.parametrize("data", [b"[]", b"[1,2]", b'"msgid"', b"6", b"null", b"true"])
def test_a_frame_that_is_not_an_object_is_answered_with_reply_to_zero(data: bytes) -> None:
    bad = decode(data)
    assert isinstance(bad, BadRequest)
    assert (bad.reply_to, bad.seq) == (0, None)


@pytest.mark.parametrize("msgid", ["6", True, False, 6.0, None, [6], {"a": 6}])
def test_a_msgid_that_is_not_an_integer_is_answered_with_reply_to_zero(msgid: object) -> None:
    assert decode(frame(msgid=msgid, seq=5)) == BadRequest(0, 5, "msgid: expected an integer")


def test_a_missing_msgid_is_answered_with_reply_to_zero_and_the_seq() -> None:
    assert decode(frame(seq=5, toid=1)) == BadRequest(0, 5, "msgid: missing")


def test_a_bad_seq_is_not_echoed_when_msgid_cannot_be_read() -> None:
    assert decode(frame(seq="5")) == BadRequest(0, None, "msgid: missing")


@pytest.mark.parametrize("seq", ["1", True, 1.5, None, [1]])
def test_a_seq_that_is_not_an_integer_is_malformed(seq: object) -> None:
    assert decode(frame(msgid=16, seq=seq)) == BadRequest(16, None, "seq: expected an integer")


@pytest.mark.parametrize("msgid", [0, 2, 5, 11, 12, 14, 15, 35, 99, -1, 2**64 - 1])
def test_an_unknown_msgid_is_named_in_the_reply(msgid: int) -> None:
    assert decode(frame(msgid=msgid, seq=1)) == BadRequest(msgid, 1, f"unknown msgid {msgid}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"msgid": 6, "msg": "x"}, "toid: missing"),
        ({"msgid": 6, "toid": "2", "msg": "x"}, "toid: expected an integer"),
        ({"msgid": 6, "toid": True, "msg": "x"}, "toid: expected an integer"),
        ({"msgid": 6, "toid": 2.0, "msg": "x"}, "toid: expected an integer"),
        ({"msgid": 6, "toid": 2}, "msg: missing"),
        ({"msgid": 6, "toid": 2, "msg": 5}, "msg: expected a string"),
        ({"msgid": 6, "toid": 2, "msg": None}, "msg: expected a string"),
        ({"msgid": 1, "id": "1", "password": "pw"}, "id: expected an integer"),
        ({"msgid": 1, "id": None, "name": "a", "password": "pw"}, "id: expected an integer"),
        ({"msgid": 1, "name": 5, "password": "pw"}, "name: expected a string"),
        ({"msgid": 1, "id": 1}, "password: missing"),
        ({"msgid": 1, "id": 1, "password": "pw", "receipts": 1}, "receipts: expected a boolean"),
        (
            {"msgid": 1, "id": 1, "password": "pw", "receipts": "true"},
            "receipts: expected a boolean",
        ),
        ({"msgid": 4, "name": "a"}, "password: missing"),
        ({"msgid": 4, "name": ["a"], "password": "b"}, "name: expected a string"),
        ({"msgid": 7}, "friendid: missing"),
        ({"msgid": 7, "friendid": "3"}, "friendid: expected an integer"),
        ({"msgid": 8}, "groupname: missing"),
        ({"msgid": 8, "groupname": "g", "groupdesc": None}, "groupdesc: expected a string"),
        ({"msgid": 9, "groupid": False}, "groupid: expected an integer"),
        ({"msgid": 10, "msg": "x"}, "groupid: missing"),
        ({"msgid": 10, "groupid": 1, "msg": {}}, "msg: expected a string"),
        ({"msgid": 13, "friendid": 3}, "accept: missing"),
        ({"msgid": 13, "friendid": 3, "accept": 1}, "accept: expected a boolean"),
        ({"msgid": 13, "friendid": 3, "accept": "false"}, "accept: expected a boolean"),
        ({"msgid": 13, "friendid": "3", "accept": True}, "friendid: expected an integer"),
        ({"msgid": 17, "groupid": "5"}, "groupid: expected an integer"),
        ({"msgid": 18}, "friendid: missing"),
        ({"msgid": 19}, "msg_ids: missing"),
        ({"msgid": 19, "msg_ids": "12"}, "msg_ids: expected a list of integers"),
        ({"msgid": 19, "msg_ids": {"1": 1}}, "msg_ids: expected a list of integers"),
        ({"msgid": 19, "msg_ids": [1, True]}, "msg_ids: expected a list of integers"),
        ({"msgid": 19, "msg_ids": [1, "2"]}, "msg_ids: expected a list of integers"),
        ({"msgid": 3, "id": "1"}, "id: expected an integer"),
        ({"msgid": 16, "id": None}, "id: expected an integer"),
        ({"msgid": 6, "id": True, "toid": 2, "msg": "x"}, "id: expected an integer"),
    ],
)
def test_a_missing_or_wrongly_typed_field_is_named(fields: dict[str, Any], message: str) -> None:
    assert decode(frame(**fields, seq=8)) == BadRequest(fields["msgid"], 8, message)


def test_an_integer_beyond_64_bits_is_not_an_integer() -> None:
    assert decode(b'{"msgid":6,"toid":18446744073709551616,"msg":"x"}') == BadRequest(
        6, None, "toid: expected an integer"
    )


# --- decoding: properties ---------------------------------------------------------------------

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=50) | st.sampled_from(
    ['say "hi"', "back\\slash", "nul\x00here", "line\nbreak", "中文消息", "emoji 😀🎉", "it's"]
)
ids = st.integers(min_value=0, max_value=2**63 - 1)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["msgid", "seq", "id", "toid", "msg", "x"]), children, max_size=4
        )
    ),
    max_leaves=8,
)


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_request_or_a_bad_request(data: bytes) -> None:
    assert isinstance(decode(data), Request | BadRequest)
    assert isinstance(decode(data, LEGACY), Request | BadRequest)


# fmt: off
WIRE_FIELDS = [
    "msgid", "seq", "id", "name", "password", "receipts", "toid", "msg", "friendid", "accept",
    "groupid", "groupname", "groupdesc", "msg_ids",
]
# fmt: on


@given(
    st.dictionaries(
        st.sampled_from(WIRE_FIELDS),
        json_values,
    ),
    st.sampled_from([1, 3, 4, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19, 99]),
)
def test_any_json_object_decodes_to_a_request_or_a_bad_request(
    fields: dict[str, Any], msgid: int
) -> None:
    result = decode(orjson.dumps({"msgid": msgid, **fields}))
    assert isinstance(result, Request | BadRequest)
    if isinstance(result, BadRequest):
        assert result.message


@given(texts, ids, st.integers(0, 2**63 - 1))
def test_chat_texts_decode_exactly(text: str, toid: int, seq: int) -> None:
    assert decode(frame(msgid=6, toid=toid, msg=text, seq=seq)) == Request(
        6, seq, SendDirectMessage(toid, text), None
    )


@given(
    st.lists(st.binary(max_size=40), max_size=4),
    st.lists(st.binary(max_size=40), max_size=4),
    texts,
    st.lists(st.integers(min_value=1, max_value=200), max_size=10),
)
def test_valid_frames_around_garbage_are_still_decoded(
    before: list[bytes], after: list[bytes], text: str, cuts: list[int]
) -> None:
    valid = frame(msgid=10, groupid=3, msg=text, seq=1)
    stream = b"\n".join([*before, valid, *after]) + b"\n"
    splitter = FrameSplitter()
    decoded = []
    position = 0
    for cut in [*cuts, len(stream)]:
        for piece in splitter.feed(stream[position : position + cut]):
            decoded.append(decode(piece))
        position += cut
    decoded += [decode(piece) for piece in splitter.feed(stream[position:])]
    assert Request(10, 1, SendGroupMessage(3, text), None) in decoded
    assert all(isinstance(item, Request | BadRequest) for item in decoded)


# --- encoding: results ------------------------------------------------------------------------

ALICE, BOB, CAROL = User(1, "alice"), User(3, "bob"), User(4, "carol")
CHAT = DirectMessage(1001, 1, "alice", 3, "hi bob", TS)
GROUP_CHAT = GroupMessage(1002, 5, 1, "alice", "hi all", TS)
ANSWER = FriendAnswer(1003, 3, "bob", True)


def request(msgid: int, seq: int | None = None) -> Request:
    commands: dict[int, Any] = {
        1: Login(password="pw", user_id=1),
        4: Register("alice", "pw"),
        6: SendDirectMessage(3, "x"),
        8: CreateGroup("g"),
        16: Ping(),
    }
    return Request(msgid, seq, commands.get(msgid, Logout()), None)


def logged_in(
    waiting: tuple[Delivery, ...] = (),
    friends: tuple[Contact, ...] = (),
    groups: tuple[GroupView, ...] = (),
    friend_requests: tuple[User, ...] = (),
    blocked: tuple[int, ...] = (),
) -> LoggedIn:
    kept = tuple(Kept(pos, d) for pos, d in enumerate(waiting, start=1))
    return LoggedIn(
        ALICE, friends, groups, kept, friend_requests, last_pos=len(waiting), blocked=blocked
    )


def test_register_reply_carries_the_new_id_and_the_seq() -> None:
    assert encode_result(request(4, seq=1), Registered(1), MODERN) == [
        b'{"msgid":5,"seq":1,"errno":0,"id":1}\n'
    ]


def test_a_chat_ack_carries_the_msg_id_and_its_pos_in_the_senders_inbox() -> None:
    assert encode_result(request(6, seq=3), MessageAccepted(1001, pos=5), MODERN) == [
        b'{"msgid":11,"seq":3,"reply_to":6,"errno":0,"msg_id":1001,"pos":5}\n'
    ]


def test_a_group_chat_ack_lists_the_members_it_was_not_stored_for() -> None:
    assert encode_result(request(10, seq=4), MessageAccepted(1002, (7, 9), 3), MODERN) == [
        b'{"msgid":11,"seq":4,"reply_to":10,"errno":0,"msg_id":1002,"pos":3,"not_stored":[7,9]}\n'
    ]


def test_docs_say_what_a_group_chat_ack_carries_when_every_member_has_it() -> None:
    """QA: docs/protocol.md said `not_stored` "is always empty", and a client reading
    ack["not_stored"] got a KeyError: the field is left out when empty (always, now)."""
    from pathlib import Path

    assert encode_result(request(10, seq=4), MessageAccepted(1002, (), 3), MODERN) == [
        b'{"msgid":11,"seq":4,"reply_to":10,"errno":0,"msg_id":1002,"pos":3}\n'
    ]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert "`not_stored` is always empty" not in docs
    assert "GROUP_CHAT's ACK carries no `not_stored` field" in docs


def test_a_create_group_ack_carries_the_group_id() -> None:
    assert one(encode_result(request(8), GroupCreated(7), MODERN)) == {
        "msgid": 11,
        "reply_to": 8,
        "errno": 0,
        "groupid": 7,
    }


def test_other_requests_get_a_plain_ack_without_seq_when_none_was_sent() -> None:
    assert encode_result(request(16), Done(), MODERN) == [b'{"msgid":11,"reply_to":16,"errno":0}\n']


def test_login_reply_lists_everything_even_when_empty() -> None:
    assert encode_result(request(1, seq=2), logged_in(), MODERN) == [
        b'{"msgid":2,"seq":2,"errno":0,"id":1,"name":"alice","last_pos":0,"read_pos":0,'
        b'"friends":[],"groups":[],"offlinemsg":[],"friend_requests":[],"blocked":[]}\n'
    ]


def test_login_reply_lists_the_users_one_blocks_to_modern_clients_only() -> None:
    assert one(encode_result(request(1), logged_in(blocked=(3, 4)), MODERN))["blocked"] == [3, 4]
    legacy = one(encode_result(request(1), logged_in(blocked=(3, 4)), LEGACY))
    assert "blocked" not in legacy


def test_block_is_decoded_with_a_boolean_block() -> None:
    from chatserver.application.commands import BlockUser

    decoded = decode(b'{"msgid":30,"seq":1,"userid":3,"block":true}')
    assert not isinstance(decoded, BadRequest) and decoded.command == BlockUser(3, True)
    assert isinstance(decode(b'{"msgid":30,"userid":3,"block":1}'), BadRequest)


def test_login_reply_describes_friends_groups_waiting_messages_and_requests() -> None:
    group = GroupView(
        Group(1, "grp", "probe group"),
        (
            GroupMemberView(ALICE, Role.CREATOR, True),
            GroupMemberView(BOB, Role.NORMAL, False),
        ),
    )
    result = logged_in(
        waiting=(CHAT, ANSWER, GROUP_CHAT),
        friends=(Contact(BOB, False), Contact(CAROL, True)),
        groups=(group,),
        friend_requests=(CAROL,),
    )
    reply = one(encode_result(request(1), result, MODERN))
    assert reply["friends"] == [
        {"id": 3, "name": "bob", "state": "offline"},
        {"id": 4, "name": "carol", "state": "online"},
    ]
    assert reply["groups"] == [
        {
            "id": 1,
            "groupname": "grp",
            "groupdesc": "probe group",
            "users": [
                {"id": 1, "name": "alice", "state": "online", "role": "creator"},
                {"id": 3, "name": "bob", "state": "offline", "role": "normal"},
            ],
        }
    ]
    assert reply["offlinemsg"] == [
        load(encode_event(Kept(1, CHAT), MODERN)),
        load(encode_event(Kept(2, ANSWER), MODERN)),
        load(encode_event(Kept(3, GROUP_CHAT), MODERN)),
    ]
    assert [m["pos"] for m in reply["offlinemsg"]] == [1, 2, 3]
    assert (reply["last_pos"], reply["read_pos"]) == (3, 0)
    assert reply["friend_requests"] == [{"id": 4, "name": "carol"}]
    assert (reply["msgid"], reply["errno"], reply["id"], reply["name"]) == (2, 0, 1, "alice")


def chats(count: int) -> tuple[DirectMessage, ...]:
    return tuple(DirectMessage(i, 1, "alice", 3, f"m{i}", TS + i) for i in range(1, count + 1))


def test_at_most_200_waiting_messages_ride_in_the_login_reply_the_rest_follow_in_order() -> None:
    waiting = chats(MAX_OFFLINE_IN_LOGIN_ACK + 5)
    frames = encode_result(request(1), logged_in(waiting=waiting), MODERN)
    assert len(frames) == 6
    reply = load(frames[0])
    assert [m["msg_id"] for m in reply["offlinemsg"]] == list(range(1, 201))
    assert [load(f)["msg_id"] for f in frames[1:]] == [201, 202, 203, 204, 205]
    assert frames[1:] == [
        encode_event(Kept(pos, m), MODERN) for pos, m in enumerate(waiting, start=1)
    ][200:]


def test_exactly_200_waiting_messages_all_ride_in_the_login_reply() -> None:
    frames = encode_result(request(1), logged_in(waiting=chats(200)), MODERN)
    assert len(frames) == 1
    assert len(load(frames[0])["offlinemsg"]) == 200


# --- encoding: the legacy dialect -------------------------------------------------------------


def test_legacy_login_reply_matches_the_original_bytes() -> None:
    """The reply the original server sent in ORIGINAL-wire-transcript.txt, step 6."""
    alice, bob = User(1, "alice_abacjc"), User(3, "bob_abacjc")
    group = GroupView(
        Group(1, "grp_abacjc", "probe group"), (GroupMemberView(alice, Role.CREATOR, True),)
    )
    result = LoggedIn(alice, (Contact(bob, False),), (group,), (), ())
    assert encode_result(request(1), result, LEGACY) == [
        b'{"errno":0,"friends":["{\\"id\\":3,\\"name\\":\\"bob_abacjc\\",\\"state\\":\\"offline'
        b'\\"}"],"groups":["{\\"groupdesc\\":\\"probe group\\",\\"groupname\\":\\"grp_abacjc\\",'
        b'\\"id\\":1,\\"users\\":[\\"{\\\\\\"id\\\\\\":1,\\\\\\"name\\\\\\":\\\\\\"alice_abacjc'
        b'\\\\\\",\\\\\\"role\\\\\\":\\\\\\"creator\\\\\\",\\\\\\"state\\\\\\":\\\\\\"online\\\\\\"}'
        b'\\"]}"],"id":1,"msgid":2,"name":"alice_abacjc"}\n'
    ]


def test_legacy_login_reply_leaves_out_empty_lists_and_friend_requests() -> None:
    result = logged_in(friend_requests=(CAROL,))
    assert encode_result(request(1), result, LEGACY) == [
        b'{"errno":0,"id":1,"msgid":2,"name":"alice"}\n'
    ]


def test_legacy_offline_messages_are_json_strings_of_chats_only() -> None:
    waiting = (CHAT, ANSWER, GROUP_CHAT)
    frames = encode_result(request(1), logged_in(waiting=waiting), LEGACY)
    assert len(frames) == 1
    offline = load(frames[0])["offlinemsg"]
    assert all(isinstance(item, str) for item in offline)
    assert [orjson.loads(item) for item in offline] == [
        load(encode_event(CHAT, LEGACY)),
        load(encode_event(GROUP_CHAT, LEGACY)),
    ]


def test_legacy_waiting_chats_past_200_follow_the_reply_without_notices() -> None:
    waiting: tuple[Delivery, ...] = (*chats(200), ANSWER, *chats(202)[200:])
    frames = encode_result(request(1), logged_in(waiting=waiting), LEGACY)
    assert len(frames) == 3
    assert len(load(frames[0])["offlinemsg"]) == 200
    assert [load(f)["msg"] for f in frames[1:]] == ["m201", "m202"]


def test_legacy_chats_have_exactly_the_original_fields_in_its_key_order() -> None:
    """ORIGINAL.md: the recipient gets the sender's object re-serialised with sorted keys, and
    nothing else (no msg_id, ts, pos or seq), live and inside a login reply."""
    time_text = local_time(TS).encode()
    direct = b'{"id":1,"msg":"hi bob","msgid":6,"name":"alice","time":"%s","toid":3}\n' % time_text
    group = b'{"groupid":5,"id":1,"msg":"hi all","msgid":10,"name":"alice","time":"%s"}\n' % (
        time_text
    )
    assert encode_event(CHAT, LEGACY) == direct
    assert encode_event(GROUP_CHAT, LEGACY) == group
    reply = one(encode_result(request(1), logged_in(waiting=(CHAT, GROUP_CHAT)), LEGACY))
    assert [item.encode() + b"\n" for item in reply["offlinemsg"]] == [direct, group]


def test_legacy_register_reply_has_sorted_keys() -> None:
    assert encode_result(request(4), Registered(1), LEGACY) == [b'{"errno":0,"id":1,"msgid":5}\n']


@pytest.mark.parametrize(
    ("msgid", "result"),
    [(6, MessageAccepted(1)), (8, GroupCreated(2)), (16, Done()), (3, Done()), (7, Done())],
)
def test_legacy_clients_get_no_ack(msgid: int, result: Result) -> None:
    assert encode_result(request(msgid, seq=1), result, LEGACY) == []


# --- encoding: errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "errno"),
    [
        (errors.InvalidCredentials(), 1),
        (errors.NameTaken(), 1),
        (errors.NotLoggedIn(), 3),
        (errors.UnknownUser(), 4),
        (errors.UnknownGroup(), 5),
        (errors.NotAMember(), 6),
        (errors.InvalidRequest("msg must not be empty"), 7),
        (errors.RateLimited(), 9),
        (errors.Forbidden(), 10),
        (errors.QuotaExceeded(), 14),
        (errors.Unavailable(), 11),
    ],
)
def test_each_domain_error_has_its_errno_and_message(error: errors.ChatError, errno: int) -> None:
    assert errno_and_message(error) == (errno, error.message)
    reply = load(encode_error(request(6, seq=4), error, MODERN))
    assert reply == {"msgid": 11, "seq": 4, "reply_to": 6, "errno": errno, "errmsg": error.message}


def test_a_subclass_of_a_mapped_error_keeps_its_errno() -> None:
    class NoSuchBot(errors.UnknownUser):
        pass

    assert errno_and_message(NoSuchBot("no such bot")) == (4, "no such bot")


@pytest.mark.parametrize(
    "error", [None, ValueError("secret detail"), errors.ChatError("unmapped"), KeyError("k")]
)
def test_anything_else_is_an_internal_error_that_tells_nothing(error: Exception | None) -> None:
    assert load(encode_error(request(16), error, MODERN)) == {
        "msgid": 11,
        "reply_to": 16,
        "errno": 11,
        "errmsg": "internal error",
    }


def test_a_login_error_is_a_login_reply() -> None:
    assert encode_error(request(1, seq=2), errors.InvalidCredentials(), MODERN) == (
        b'{"msgid":2,"seq":2,"errno":1,"errmsg":"id or password is invalid!"}\n'
    )


def test_a_register_error_is_a_register_reply() -> None:
    assert load(encode_error(request(4), errors.NameTaken(), MODERN)) == {
        "msgid": 5,
        "errno": 1,
        "errmsg": "name already taken",
    }


def test_legacy_login_error_matches_the_original_bytes() -> None:
    assert encode_error(request(1), errors.InvalidCredentials(), LEGACY) == (
        b'{"errmsg":"id or password is invalid!","errno":1,"msgid":2}\n'
    )


def test_legacy_clients_get_errors_only_for_login_and_register() -> None:
    assert encode_error(request(4), errors.NameTaken(), LEGACY) == (
        b'{"errmsg":"name already taken","errno":1,"msgid":5}\n'
    )
    assert encode_error(request(6), errors.UnknownUser(), LEGACY) is None
    assert encode_error(request(16), None, LEGACY) is None


def test_encode_error_also_answers_a_bad_request() -> None:
    bad = BadRequest(6, 9, "toid: missing")
    assert load(encode_error(bad, errors.RateLimited(), MODERN)) == {
        "msgid": 11,
        "seq": 9,
        "reply_to": 6,
        "errno": 9,
        "errmsg": errors.RateLimited().message,
    }


def test_a_bad_request_gets_errno_7_with_its_message() -> None:
    assert encode_bad_request(BadRequest(99, None, "unknown msgid 99"), MODERN) == (
        b'{"msgid":11,"reply_to":99,"errno":7,"errmsg":"unknown msgid 99"}\n'
    )
    assert load(encode_bad_request(BadRequest(0, 3, "bad JSON"), MODERN)) == {
        "msgid": 11,
        "seq": 3,
        "reply_to": 0,
        "errno": 7,
        "errmsg": "bad JSON",
    }


def test_a_malformed_login_or_register_gets_its_own_reply_type() -> None:
    assert load(encode_bad_request(BadRequest(1, 2, "password: missing"), MODERN)) == {
        "msgid": 2,
        "seq": 2,
        "errno": 7,
        "errmsg": "password: missing",
    }
    assert load(encode_bad_request(BadRequest(4, None, "name: missing"), MODERN)) == {
        "msgid": 5,
        "errno": 7,
        "errmsg": "name: missing",
    }


def test_legacy_clients_hear_about_bad_requests_only_for_login_and_register() -> None:
    assert encode_bad_request(BadRequest(0, None, "bad JSON"), LEGACY) is None
    assert encode_bad_request(BadRequest(6, None, "toid: missing"), LEGACY) is None
    # The original client waits for its LOGIN reply: a malformed LOGIN still gets one.
    assert encode_bad_request(BadRequest(1, None, "password: missing"), LEGACY) == (
        b'{"errmsg":"password: missing","errno":7,"msgid":2}\n'
    )


def test_frame_too_large_gets_errno_8_except_in_legacy() -> None:
    assert load(encode_frame_too_large(MODERN)) == {
        "msgid": 11,
        "reply_to": 0,
        "errno": 8,
        "errmsg": "frame too large",
    }
    assert encode_frame_too_large(LEGACY) is None


# --- encoding: events -------------------------------------------------------------------------


def test_a_direct_message_push_carries_sender_time_and_msg_id() -> None:
    assert encode_event(CHAT, MODERN) == (
        b'{"msgid":6,"id":1,"name":"alice","toid":3,"msg":"hi bob","time":"'
        + local_time(TS).encode()
        + b'","ts":1795735800000,"msg_id":1001}\n'
    )


def test_a_group_message_push_carries_the_group() -> None:
    assert load(encode_event(GROUP_CHAT, MODERN)) == {
        "msgid": 10,
        "groupid": 5,
        "id": 1,
        "name": "alice",
        "msg": "hi all",
        "time": local_time(TS),
        "ts": TS,
        "msg_id": 1002,
    }


def test_time_is_local_time_to_the_second() -> None:
    for ts in (0, 999, 1000, TS - 1, TS + 59_999, 4_102_444_800_000):
        message = DirectMessage(1, 1, "a", 2, "x", ts)
        assert load(encode_event(message, MODERN))["time"] == local_time(ts)


def test_times_stay_right_past_the_formatted_time_cache() -> None:
    for second in range(0, 5000 * 3607, 3607):
        message = DirectMessage(1, 1, "a", 2, "x", second * 1000 + 999)
        assert load(encode_event(message, MODERN))["time"] == local_time(second * 1000)


@pytest.mark.parametrize(
    ("event", "body"),
    [
        (ANSWER, {"msgid": 13, "id": 3, "name": "bob", "accept": True, "msg_id": 1003}),
        (
            FriendAnswer(7, 3, "bob", False),
            {"msgid": 13, "id": 3, "name": "bob", "accept": False, "msg_id": 7},
        ),
        (FriendRequestNotice(4, "carol"), {"msgid": 12, "id": 4, "name": "carol"}),
        (PresenceNotice(3, True), {"msgid": 14, "id": 3, "state": "online"}),
        (PresenceNotice(3, False), {"msgid": 14, "id": 3, "state": "offline"}),
        (KickedNotice("replaced"), {"msgid": 15, "errmsg": "replaced"}),
    ],
)
def test_notices_and_friend_answers(event: Event, body: dict[str, Any]) -> None:
    assert load(encode_event(event, MODERN)) == body
    assert encode_event(event, LEGACY) is None


# --- encoding: properties ---------------------------------------------------------------------

names = texts
timestamps = st.integers(min_value=0, max_value=4_102_444_800_000)
deliveries = st.one_of(
    st.builds(DirectMessage, ids, ids, names, ids, texts, timestamps),
    st.builds(GroupMessage, ids, ids, ids, names, texts, timestamps),
    st.builds(FriendAnswer, ids, ids, names, st.booleans()),
)
events = st.one_of(
    deliveries,
    st.builds(FriendRequestNotice, ids, names),
    st.builds(PresenceNotice, ids, st.booleans()),
    st.builds(KickedNotice, texts),
)
users = st.builds(User, ids, names)
group_views = st.builds(
    GroupView,
    st.builds(Group, ids, names, texts),
    st.lists(
        st.builds(GroupMemberView, users, st.sampled_from(Role), st.booleans()), max_size=3
    ).map(tuple),
)
login_results = st.builds(
    LoggedIn,
    users,
    st.lists(st.builds(Contact, users, st.booleans()), max_size=3).map(tuple),
    st.lists(group_views, max_size=2).map(tuple),
    st.lists(st.builds(Kept, ids, deliveries), max_size=4).map(tuple),
    st.lists(users, max_size=2).map(tuple),
    ids,
    ids,
)
results = st.one_of(
    st.builds(Done),
    st.builds(Registered, ids),
    st.builds(MessageAccepted, ids, pos=ids),
    st.builds(GroupCreated, ids),
    login_results,
    st.builds(Synced, st.lists(st.builds(Kept, ids, deliveries), max_size=3).map(tuple), ids,
              st.booleans()),
    st.builds(HistoryPage, st.lists(st.builds(Kept, ids, deliveries), max_size=3).map(tuple),
              st.booleans()),
)
dialects = st.sampled_from(Dialect)
seqs = st.none() | st.integers(-(2**63), 2**64 - 1)
msgids = st.sampled_from([1, 3, 4, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19, 20, 21, 22])


def assert_one_json_line(data: bytes) -> Any:
    assert data.endswith(b"\n")
    assert b"\n" not in data[:-1]
    assert b"\0" not in data
    body = orjson.loads(data)
    assert isinstance(body, dict)
    return body


@given(events, dialects)
def test_every_event_frame_is_one_line_of_json(event: Event, dialect: Dialect) -> None:
    data = encode_event(event, dialect)
    if data is not None:
        assert_one_json_line(data)


@given(msgids, seqs, results, dialects)
def test_every_reply_frame_is_one_line_of_json(
    msgid: int, seq: int | None, result: Result, dialect: Dialect
) -> None:
    frames = encode_result(Request(msgid, seq, Ping(), None), result, dialect)
    if dialect is LEGACY and msgid not in (1, 4):
        assert frames == []
        return
    reply, *pushes = [assert_one_json_line(data) for data in frames]
    assert reply.get("seq") == seq
    assert reply["errno"] == 0
    assert all("seq" not in push for push in pushes)


@given(
    msgids | st.integers(0, 100),
    seqs,
    st.sampled_from([None, *errors.ChatError.__subclasses__()]),
    texts,
    dialects,
)
def test_every_error_frame_is_one_line_of_json(
    msgid: int, seq: int | None, error_class: Any, text: str, dialect: Dialect
) -> None:
    error = None if error_class is None else error_class(text or None)
    for data in (
        encode_error(BadRequest(msgid, seq, text), error, dialect),
        encode_bad_request(BadRequest(msgid, seq, text), dialect),
    ):
        if data is not None:
            body = assert_one_json_line(data)
            assert body["errno"] != 0


@given(texts, names)
def test_texts_round_trip_through_direct_message_pushes(text: str, name: str) -> None:
    for dialect in Dialect:
        body = load(encode_event(DirectMessage(1, 2, name, 3, text, TS), dialect))
        assert (body["msg"], body["name"]) == (text, name)


@given(texts, names, texts)
def test_texts_round_trip_through_the_legacy_login_reply(
    text: str, name: str, description: str
) -> None:
    user = User(1, name)
    group = GroupView(Group(2, name, description), (GroupMemberView(user, Role.NORMAL, True),))
    chat = GroupMessage(9, 2, 1, name, text, TS)
    result = LoggedIn(user, (Contact(user, True),), (group,), (Kept(1, chat),), ())
    body = one(encode_result(request(1), result, LEGACY))
    assert orjson.loads(body["offlinemsg"][0])["msg"] == text
    assert orjson.loads(body["friends"][0])["name"] == name
    legacy_group = orjson.loads(body["groups"][0])
    assert legacy_group["groupdesc"] == description
    assert orjson.loads(legacy_group["users"][0])["name"] == name


def test_ids_beyond_64_bits_are_malformed_not_internal_errors() -> None:
    from chatserver.adapters.wire.codec import BadRequest as Bad
    from chatserver.adapters.wire.codec import decode as decode_frame

    frame = b'{"msgid":10,"groupid":9223372036854775808,"msg":"x"}'
    bad = decode_frame(frame)
    assert isinstance(bad, Bad) and bad.reply_to == 10 and "groupid" in bad.message
    ok = decode_frame(b'{"msgid":10,"groupid":9223372036854775807,"msg":"x"}')
    assert not isinstance(ok, Bad)


# --- the hand-written fast paths of the hottest requests ----------------------------------


def decode_without_fast_paths(data: bytes) -> Request | BadRequest:
    from chatserver.adapters.wire.decoding import FAST_PATHS

    saved = dict(FAST_PATHS)
    FAST_PATHS.clear()
    try:
        return decode(data)
    finally:
        FAST_PATHS.update(saved)


edge_ints = st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64])
fast_path_values = (
    json_values
    | edge_ints
    | st.lists(st.integers(-(2**63), 2**63 - 1) | edge_ints | st.booleans(), max_size=4)
)


@given(
    st.dictionaries(
        st.sampled_from(["toid", "groupid", "msg", "msg_ids", "id", "seq", "x"]),
        fast_path_values,
    ),
    st.sampled_from([6, 10, 16, 19]),
)
def test_the_fast_paths_decode_exactly_as_cattrs_does(fields: dict[str, Any], msgid: int) -> None:
    # Built with the standard library, which writes integers beyond 64 bits as they are.
    data = json.dumps({"msgid": msgid, **fields}).encode()
    assert decode(data) == decode_without_fast_paths(data)


@given(texts, st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_the_fast_paths_take_every_well_formed_request(text: str, some_id: int, other: int) -> None:
    from chatserver.adapters.wire.decoding import FAST_PATHS

    bodies = {
        6: {"toid": some_id, "msg": text},
        10: {"groupid": some_id, "msg": text},
        16: {},
        19: {"msg_ids": [some_id, other]},
    }
    for msgid, body in bodies.items():
        assert FAST_PATHS[msgid](body) is not None


# --- version 2: devices, the inbox, SYNC, HISTORY, READ ----------------------------------------


def test_login_takes_a_device_and_since() -> None:
    request = decode(frame(msgid=1, id=1, password="pw", device="phone", since=7))
    assert isinstance(request, Request)
    assert request.command == Login(password="pw", user_id=1, device="phone", since=7)


def test_sync_history_and_read_are_decoded_with_their_defaults() -> None:
    from chatserver.application.commands import History, Read, Sync

    assert decode(frame(msgid=20, since=3)) == Request(20, None, Sync(3), None)
    assert decode(frame(msgid=21, groupid=5, before=9, limit=10)) == Request(
        21, None, History(group_id=5, before=9, limit=10), None
    )
    assert decode(frame(msgid=21, **{"with": 4})) == Request(21, None, History(with_user=4), None)
    assert decode(frame(msgid=22, pos=8)) == Request(22, None, Read(8), None)
    assert decode(frame(msgid=20)) == BadRequest(20, None, "since: missing")
    assert decode(frame(msgid=22, pos="8")) == BadRequest(22, None, "pos: expected an integer")


@pytest.mark.parametrize("msgid", [20, 21, 22])
def test_the_legacy_dialect_knows_no_version_2_msgid(msgid: int) -> None:
    decoded = decode(frame(msgid=msgid, since=0, pos=0, groupid=1), LEGACY)
    assert decoded == BadRequest(msgid, None, f"unknown msgid {msgid}")


def test_a_legacy_login_is_always_the_legacy_device() -> None:
    request = decode(frame(msgid=1, id=1, password="pw", device="pc", since=4), LEGACY)
    assert isinstance(request, Request) and isinstance(request.command, Login)
    assert (request.command.device, request.command.since) == ("legacy", None)


def test_a_kept_push_carries_pos_in_the_modern_dialect_only() -> None:
    modern = load(encode_event(Kept(12, CHAT), MODERN))
    assert modern == {**load(encode_event(CHAT, MODERN)), "pos": 12}
    legacy = encode_event(Kept(12, CHAT), LEGACY)
    assert legacy == encode_event(CHAT, LEGACY) and b"pos" not in (legacy or b"")
    assert encode_event(Kept(13, ANSWER), LEGACY) is None


def test_read_is_pushed_to_modern_clients_only() -> None:
    from chatserver.domain.messages import ReadNotice

    assert encode_event(ReadNotice(5), MODERN) == b'{"msgid":22,"pos":5}\n'
    assert encode_event(ReadNotice(5), LEGACY) is None


def test_friend_removed_is_pushed_to_modern_clients_only() -> None:
    from chatserver.domain.messages import FriendRemovedNotice

    assert encode_event(FriendRemovedNotice(7), MODERN) == b'{"msgid":31,"id":7}\n'
    assert encode_event(FriendRemovedNotice(7), LEGACY) is None


def test_sync_and_history_replies_carry_kept_objects() -> None:
    synced = one(encode_result(request(20, seq=1), Synced((Kept(4, CHAT),), 9, True), MODERN))
    assert synced["msgs"] == [load(encode_event(Kept(4, CHAT), MODERN))]
    assert (synced["last_pos"], synced["truncated"], synced["reply_to"]) == (9, True, 20)
    page = one(encode_result(request(21), HistoryPage((Kept(2, GROUP_CHAT),), False), MODERN))
    assert [m["pos"] for m in page["msgs"]] == [2] and page["more"] is False
