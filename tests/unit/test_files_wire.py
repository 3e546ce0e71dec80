"""The wire side of files (PROTOCOL.md Version 2, "Files"): FILE_UPLOAD 33 and FILE_URL 34,
`file` in ONE_CHAT and GROUP_CHAT (in and out), errno 14, and the stored form of a chat with
a file (inbox body and bus message)."""

from typing import Any

import orjson
import pytest

from chatserver.adapters.serialization import (
    dump_delivery,
    event_from_dict,
    event_to_dict,
    load_delivery,
)
from chatserver.adapters.wire.codec import Dialect, decode, encode_event, encode_result
from chatserver.adapters.wire.decoding import BadRequest, Request
from chatserver.adapters.wire.errors import errno_and_message
from chatserver.application.commands import (
    FileUrl,
    SendDirectMessage,
    SendGroupMessage,
    UploadFile,
)
from chatserver.application.results import DownloadGranted, UploadGranted
from chatserver.domain.errors import InvalidRequest, TooLarge
from chatserver.domain.messages import DirectMessage, FileRef, GroupMessage, Kept

FILE = FileRef(7, "cat.png", 1234, "image/png", "ab" * 32)


def command(frame: dict[str, Any]) -> Any:
    request = decode(orjson.dumps(frame))
    assert isinstance(request, Request), request
    return request.command


def test_file_requests_and_the_file_field_decode() -> None:
    assert command({"msgid": 33, "name": "a.png", "size": 3, "mime": "image/png"}) == (
        UploadFile("a.png", 3, "image/png"))
    assert command({"msgid": 34, "file_id": 9}) == FileUrl(9)
    chat = command({"msgid": 6, "toid": 2, "msg": "", "file": 9})
    assert chat == SendDirectMessage(2, "", 9)
    chat.validate()  # with a file, the text may be empty
    assert command({"msgid": 10, "groupid": 3, "msg": "hi", "file": 9}) == (
        SendGroupMessage(3, "hi", 9))
    with pytest.raises(InvalidRequest):
        command({"msgid": 6, "toid": 2, "msg": ""}).validate()  # without one it may not
    for bad in ({"msgid": 6, "toid": 2, "msg": "", "file": "9"},
                {"msgid": 33, "name": "a", "size": "3", "mime": "x/y"},
                {"msgid": 34}):
        assert isinstance(decode(orjson.dumps(bad)), BadRequest)


@pytest.mark.parametrize(
    ("name", "size", "mime"),
    [("", 1, "a/b"), ("a/b", 1, "a/b"), ("x", -1, "a/b"), ("x", 1, "png"), ("x", 1, "a/")],
)
def test_bad_file_values_are_errno_7(name: str, size: int, mime: str) -> None:
    with pytest.raises(InvalidRequest):
        UploadFile(name, size, mime).validate()


def test_errno_14_and_the_acks_carry_the_links() -> None:
    assert errno_and_message(TooLarge())[0] == 14
    request = Request(33, 5, UploadFile("a", 1, "a/b"))
    (ack,) = encode_result(request, UploadGranted(4, "/files/upload/4?e=1&s=x"), Dialect.MODERN)
    assert orjson.loads(ack) == {"msgid": 11, "seq": 5, "reply_to": 33, "errno": 0,
                                 "file_id": 4, "upload_url": "/files/upload/4?e=1&s=x"}
    (ack,) = encode_result(Request(34, None, FileUrl(4)), DownloadGranted("/files/4?u=1"),
                           Dialect.MODERN)
    assert orjson.loads(ack)["url"] == "/files/4?u=1"


def test_a_chat_with_a_file_is_pushed_with_it_and_the_legacy_dialect_never_sees_it() -> None:
    direct = DirectMessage(1001, 1, "alice", 2, "", 1_795_735_800_000, file=FILE)
    group = GroupMessage(1002, 3, 1, "alice", "look", 1_795_735_800_000, file=FILE)
    expected = {"id": 7, "name": "cat.png", "size": 1234, "mime": "image/png",
                "sha256": "ab" * 32}
    for message in (direct, group):
        pushed = orjson.loads(encode_event(Kept(5, message), Dialect.MODERN) or b"")
        assert pushed["file"] == expected and pushed["pos"] == 5
        legacy = orjson.loads(encode_event(Kept(5, message), Dialect.LEGACY) or b"")
        assert "file" not in legacy
    plain = orjson.loads(encode_event(Kept(6, DirectMessage(9, 1, "a", 2, "x", 0)),
                                      Dialect.MODERN) or b"")
    assert "file" not in plain


def test_a_chat_with_a_file_is_stored_and_crosses_nodes_whole() -> None:
    for message in (DirectMessage(1, 1, "a", 2, "", 0, file=FILE),
                    GroupMessage(2, 3, 1, "a", "x", 0, file=FILE),
                    DirectMessage(3, 1, "a", 2, "no file", 0)):
        assert load_delivery(*dump_delivery(message)) == message
        assert event_from_dict(orjson.loads(orjson.dumps(event_to_dict(message)))) == message


@pytest.mark.anyio
@pytest.mark.parametrize("ws_port", [None, 0])
async def test_files_off_says_both_things_that_turn_them_on(ws_port: int | None) -> None:
    """QA: a node with its web port on but no folder for files (MySQL without --files, here
    memory://) answered FILE_UPLOAD errno 11 "files need the web port (--ws-port)": the one
    thing the operator had done. The message names both conditions, and the node says at
    start that files are off."""
    import chatserver

    config = chatserver.Config(database="memory://", port=0, ws_port=ws_port)
    async with chatserver.open_node(config) as node:
        client = node.connect()
        user = (await client.request(chatserver.Register("alice", "pw"))).user_id
        await client.request(chatserver.Login("pw", user_id=user))
        with pytest.raises(chatserver.Unavailable) as refused:
            await client.request(UploadFile("a.txt", 3, "text/plain"))
    assert "--ws-port" in refused.value.message and "--files" in refused.value.message
