"""The web page as a device of PROTOCOL.md Version 2 ("Devices", "The inbox"), in Chromium.

Against the real server (`chatserver serve --ws-port`, a raw TCP user as the third party): two
pages logged in as one user on two devices both show a conversation, keep it across a reload
and agree on unread counts; "older" loads earlier messages when scrolled to the top.

Against a scripted peer (web_fake_inbox.FakeInbox, behind Playwright's WebSocket routing): the
page's own bookkeeping, with frames a real server sends only in races or at scale: duplicates,
SYNC in pages after a drop, a truncated SYNC, objects whose msgid the page does not know, the
READ mark when another conversation is still unread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, WebSocketRoute, expect

from tests.integration import web_helpers
from tests.integration.conftest import Chat, Client, User
from tests.integration.web_fake_inbox import FakeInbox
from tests.integration.web_helpers import (
    CHROMIUM,
    WAIT_MS,
    ChatPage,
    WebServer,
    cluster_pages,
    new_context,
)

# The fixtures the browser tests share.
browser, chat, web = web_helpers.browser, web_helpers.chat, web_helpers.web

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

TRICKY = '<img src=x onerror="document.title=1"> & \'quotes\' 你好 😀'
DEVICE = re.compile(r"web-[0-9a-f]{20}")

OpenPage = Callable[..., ChatPage]


@pytest.fixture
def fake() -> FakeInbox:
    return FakeInbox()


@pytest.fixture
def open_page(browser: Browser, web: WebServer, fake: FakeInbox) -> Iterator[OpenPage]:
    """A page in a fresh browser context (a device of its own: its own localStorage), talking
    to the real server, or with `scripted=True` to the fake."""
    pages: list[ChatPage] = []

    def open_(scripted: bool = False) -> ChatPage:
        context = new_context(browser)
        if scripted:
            fake.attach(context)
        page = ChatPage(context.new_page(), web.url)
        pages.append(page)
        return page.open()

    yield open_
    for page in pages:
        page.assert_healthy()
        assert page.page.title() == "chatserver", "text from the network ran as markup"
        page.page.context.close()


def texts(page: ChatPage) -> list[str]:
    return page.messages().all_inner_texts()


def expect_texts(page: ChatPage, wanted: list[str]) -> None:
    expect(page.messages()).to_have_text(wanted, timeout=WAIT_MS)


def sent(page: ChatPage, text: str) -> None:
    """A message of the user's own (sent here or on another device) shown as theirs."""
    mine = page.by("messages").locator(".message.mine").filter(has_text=text)
    expect(mine).to_have_count(1, timeout=WAIT_MS)


# --------------------------------------------------------------------------- the real server


def login_device(chat: Chat, user: User, device: str) -> Client:
    client = chat.client()
    client.login(user, receipts=True, device=device)
    return client


def test_two_devices_of_one_user_show_one_conversation_keep_it_and_agree_on_unread(
    chat: Chat, open_page: OpenPage
) -> None:
    carol, me = chat.user("carol"), chat.user("me")
    tcp = chat.online(carol, receipts=True)
    pc, laptop = open_page(), open_page()
    pc.log_in(me.id, me.password)
    laptop.log_in(me.id, me.password)
    for page in (pc, laptop):
        assert DEVICE.fullmatch(page.device() or ""), page.device()
    assert pc.device() != laptop.device()

    tcp.ok({"msgid": 6, "toid": me.id, "msg": "one"})
    tcp.ok({"msgid": 6, "toid": me.id, "msg": TRICKY})
    pc.expect_text(f"unread-u-{carol.id}", "2")
    laptop.expect_text(f"unread-u-{carol.id}", "2")

    # Read on the pc: READ reaches the laptop, whose count goes too.
    pc.open_conversation("u", carol.id)
    expect_texts(pc, ["one", TRICKY])
    expect(laptop.by(f"unread-u-{carol.id}")).to_have_count(0, timeout=WAIT_MS)

    # What one device sends, the other shows as the user's own (a carbon), and carol gets it.
    pc.send("from the pc")
    assert tcp.expect({"msgid": 6, "id": me.id})["msg"] == "from the pc"
    laptop.open_conversation("u", carol.id)
    sent(laptop, "from the pc")
    laptop.send("from the laptop")
    assert tcp.expect({"msgid": 6, "id": me.id})["msg"] == "from the laptop"
    sent(pc, "from the laptop")
    conversation = ["one", TRICKY, "from the pc", "from the laptop"]
    expect_texts(pc, conversation)
    expect_texts(laptop, conversation)

    # Both reload: the conversation is still there, in order, and nothing is unread.
    for page in (pc, laptop):
        page.reload().log_in(me.id, me.password)
        expect(page.by(f"conversation-u-{carol.id}")).to_contain_text(carol.name, timeout=WAIT_MS)
        expect(page.by(f"unread-u-{carol.id}")).to_have_count(0)
        page.open_conversation("u", carol.id)
        expect_texts(page, conversation)
        sent(page, "from the pc")
        page.close_conversation()

    # A new message while neither device shows the chat: unread 1 on both, and after the
    # laptop reloads too; reading it on the laptop clears it on the pc.
    tcp.ok({"msgid": 6, "toid": me.id, "msg": "are you there?"})
    pc.expect_text(f"unread-u-{carol.id}", "1")
    laptop.expect_text(f"unread-u-{carol.id}", "1")
    laptop.reload().log_in(me.id, me.password)
    laptop.expect_text(f"unread-u-{carol.id}", "1")
    laptop.open_conversation("u", carol.id)
    laptop.expect_message("are you there?")
    expect(pc.by(f"unread-u-{carol.id}")).to_have_count(0, timeout=WAIT_MS)
    pc.reload().log_in(me.id, me.password)
    expect(pc.by(f"conversation-u-{carol.id}")).to_be_visible(timeout=WAIT_MS)
    expect(pc.by(f"unread-u-{carol.id}")).to_have_count(0)

    # The same device id from elsewhere is a takeover of that device only.
    other = login_device(chat, me, pc.device() or "")
    expect(pc.by("kicked-notice")).to_be_visible(timeout=WAIT_MS)
    laptop.expect_logged_in()
    other.close()


def test_older_messages_load_when_scrolled_to_the_top(chat: Chat, open_page: OpenPage) -> None:
    carol, dave, me = chat.user("carol"), chat.user("dave"), chat.user("me")
    tcp_carol, tcp_dave = chat.online(carol), chat.online(dave)
    older = [f"carol {n}" for n in range(1, 41)]
    for text in older:
        tcp_carol.ok({"msgid": 6, "toid": me.id, "msg": text})
    for n in range(200):  # carol's are now older than what a new device syncs at login
        tcp_dave.ok({"msgid": 6, "toid": me.id, "msg": f"dave {n}"})
    # The user's phone gets them all (without receipts: delivered is had) and reads them, so a
    # new device starts after the phone's mark and syncs only the newest at login.
    elsewhere = chat.client()
    ack = elsewhere.login(me, receipts=False, device="phone")
    assert ack["last_pos"] >= 240, ack
    elsewhere.drain(1.0)  # what did not fit in offlinemsg follows it
    elsewhere.ok({"msgid": 22, "pos": ack["last_pos"]})
    elsewhere.close()

    page = open_page()
    page.log_in(me.id, me.password)
    expect(page.by(f"conversation-u-{dave.id}")).to_be_visible(timeout=WAIT_MS)
    expect(page.by(f"unread-u-{dave.id}")).to_have_count(0)
    page.open_chat_with(carol.id)
    expect_texts(page, older[-30:])  # HISTORY's newest page
    expect(page.by("older-button")).to_be_visible(timeout=WAIT_MS)
    page.scroll_messages_to_top()
    expect_texts(page, older)
    expect(page.by("older-button")).to_be_hidden(timeout=WAIT_MS)


def test_a_group_on_two_devices_its_history_and_what_each_device_sent(
    chat: Chat, open_page: OpenPage
) -> None:
    carol, dave, me = chat.user("carol"), chat.user("dave"), chat.user("me")
    tcp_carol, tcp_dave = chat.online(carol), chat.online(dave)
    phone = chat.client()
    phone.login(me, receipts=False, device="phone")
    group_id, group_name = chat.make_group(tcp_carol, phone)
    said = [f"group {n}" for n in range(1, 36)]
    for text in said:
        tcp_carol.ok({"msgid": 10, "groupid": group_id, "msg": text})
    for n in range(200):  # the group's messages are older than a new device's SYNC
        tcp_dave.ok({"msgid": 6, "toid": me.id, "msg": f"dave {n}"})
    phone.drain(1.0)
    phone.ok({"msgid": 22, "pos": phone.request({"msgid": 20, "since": 0, "limit": 1})["last_pos"]})
    phone.close()

    pc, laptop = open_page(), open_page()
    pc.log_in(me.id, me.password)
    laptop.log_in(me.id, me.password)
    pc.by(f"group-{group_id}").get_by_role("button").click()
    pc.expect_text("conversation-title", group_name)
    expect_texts(pc, said[-30:])  # HISTORY of the group, newest page
    pc.scroll_messages_to_top()
    # the group's history starts with the user's joining it (a GROUP_EVENT, a line of its own)
    expect_texts(pc, ["You joined the group.", *said])

    pc.send("pc to the group")
    assert tcp_carol.expect({"msgid": 10, "id": me.id})["msg"] == "pc to the group"
    laptop.open_conversation("g", group_id)
    sent(laptop, "pc to the group")
    laptop.send("laptop to the group")
    sent(pc, "laptop to the group")
    tcp_carol.ok({"msgid": 10, "groupid": group_id, "msg": "carol again"})
    pc.expect_message("carol again")
    laptop.expect_message("carol again")
    expect(laptop.messages()).to_contain_text(
        ["group 35", "pc to the group", "laptop to the group", "carol again"], timeout=WAIT_MS
    )


def test_after_a_dropped_connection_the_page_catches_up_with_the_server(
    browser: Browser, web: WebServer, chat: Chat
) -> None:
    """The page's socket goes through Playwright's routing to the real server, so the test can
    drop it and hold the page off while 250 messages arrive: more than LOGIN's offlinemsg
    holds. The re-login says `since` and SYNCs from what the page has; what comes both ways
    (the frames that follow offlinemsg, the SYNC) is shown once, in order."""
    carol, me = chat.user("carol"), chat.user("me")
    tcp = chat.online(carol)
    routes: list[WebSocketRoute] = []
    held = {"off": False}
    sent: list[dict[str, Any]] = []  # what the page sent, connection after connection

    def route(ws: WebSocketRoute) -> None:
        if held["off"]:
            ws.close()  # refused: the page backs off and tries again
            return
        server = ws.connect_to_server()

        def forward(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        ws.on_message(forward)
        routes.append(ws)

    context = browser.new_context(viewport={"width": 1000, "height": 700})
    context.set_default_timeout(WAIT_MS)
    context.route_web_socket("**/ws", route)
    try:
        page = ChatPage(context.new_page(), web.url).open()
        page.log_in(me.id, me.password)
        tcp.ok({"msgid": 6, "toid": me.id, "msg": "before the drop"})
        page.open_conversation("u", carol.id)
        page.expect_message("before the drop")

        logins_before = len([f for f in sent if f["msgid"] == 1])
        held["off"] = True
        routes[-1].close()
        expect(page.status).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        away = [f"while away {n}" for n in range(250)]
        for text in away:
            tcp.ok({"msgid": 6, "toid": me.id, "msg": text})
        held["off"] = False
        page.expect_logged_in()
        expect_texts(page, ["before the drop", *away])
        relogin = [f for f in sent if f["msgid"] == 1][logins_before:]
        assert relogin and relogin[-1]["since"] >= 1, relogin
        syncs = [f for f in sent if f["msgid"] == 20 and f["since"] >= relogin[-1]["since"]]
        assert syncs, sent
        tcp.ok({"msgid": 6, "toid": me.id, "msg": "after"})
        page.expect_message("after")
        assert texts(page) == ["before the drop", *away, "after"]
        page.assert_healthy()
    finally:
        context.close()


def test_two_devices_on_different_nodes_of_a_cluster(
    tmp_path: Path, browser: Browser
) -> None:
    """The pc's page is served by node 1, the laptop's by node 2; carol is a TCP user through
    nginx. Carbons and READ cross the nodes."""
    with cluster_pages(browser, tmp_path) as (cluster, pc, laptop):
        chat = Chat(cluster)
        carol, me = chat.user("carol"), chat.user("me")
        tcp = chat.online(carol)
        pc.log_in(me.id, me.password)
        laptop.log_in(me.id, me.password)

        tcp.ok({"msgid": 6, "toid": me.id, "msg": "to both nodes"})
        pc.expect_text(f"unread-u-{carol.id}", "1")
        laptop.expect_text(f"unread-u-{carol.id}", "1")
        pc.open_conversation("u", carol.id)
        pc.expect_message("to both nodes")
        expect(laptop.by(f"unread-u-{carol.id}")).to_have_count(0, timeout=WAIT_MS)
        pc.send("sent on node 1")
        assert tcp.expect({"msgid": 6, "id": me.id})["msg"] == "sent on node 1"
        laptop.open_conversation("u", carol.id)
        sent(laptop, "sent on node 1")
        laptop.reload().log_in(me.id, me.password)
        laptop.open_conversation("u", carol.id)
        expect_texts(laptop, ["to both nodes", "sent on node 1"])
        chat.close_all()


# --------------------------------------------------------------------------- the scripted peer


def test_each_browser_is_a_device_and_logs_in_with_what_it_kept(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me, carol = fake.user("me"), fake.user("carol")
    for n in range(3):
        fake.chat(carol, me, f"before {n}")
    page = open_page(scripted=True)
    page.log_in(me.id, me.password)
    page.expect_text(f"unread-u-{carol.id}", "3")
    first = fake.logins()[-1]
    assert DEVICE.fullmatch(first["device"]) and "since" not in first, first

    page.reload().log_in(me.id, me.password)
    again = fake.logins()[-1]
    assert again["device"] == first["device"] and again["since"] == 3, again
    page.expect_text(f"unread-u-{carol.id}", "3")  # unread stays unread across a reload
    page.reload().log_in(me.name, me.password)  # by name: the page knows the id it had
    assert fake.logins()[-1]["since"] == 3, fake.logins()[-1]

    other = open_page(scripted=True)
    other.log_in(me.id, me.password)
    assert DEVICE.fullmatch(fake.logins()[-1]["device"])
    assert fake.logins()[-1]["device"] != first["device"]
    other.expect_text(f"unread-u-{carol.id}", "3")


def test_after_a_drop_the_page_syncs_in_pages_and_shows_each_message_once(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me, carol = fake.user("me"), fake.user("carol")
    fake.chat(carol, me, "hello")
    page = open_page(scripted=True)
    page.log_in(me.id, me.password)
    page.open_conversation("u", carol.id)
    page.expect_message("hello")

    assert [frame["since"] for frame in fake.requests(20)] == [0]  # at login, until last_pos 1
    fake.drop_all()
    expect(page.status).to_have_attribute("data-state", "down", timeout=WAIT_MS)
    away = [f"away {n}" for n in range(450)]
    for text in away:
        fake.chat(carol, me, text)
    page.expect_logged_in()
    expect_texts(page, ["hello", *away])
    # offlinemsg brought 2-201; SYNC pages of 200 the rest.
    assert [frame["since"] for frame in fake.requests(20)] == [0, 201, 401]

    # The same objects again, live: nothing new on screen.
    for obj in me.inbox[:5]:
        fake.push(me, obj)
    fake.chat(carol, me, "after")
    page.expect_message("after")
    assert texts(page) == ["hello", *away, "after"]
    assert fake.logins()[-1]["since"] == 1


def test_objects_the_page_does_not_know_are_ignored_but_counted_as_had(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me, carol = fake.user("me"), fake.user("carol")
    for n in range(6):
        fake.chat(carol, me, f"old {n}")
    fake.forget_before(me, 4)  # 1-3 have left the history window
    fake.append_raw(me, {"msgid": 29, "groupid": 7, "event": "joined", "userid": carol.id})
    fake.append_raw(me, {"msgid": 99, "msg": TRICKY})
    fake.chat(carol, me, TRICKY)
    page = open_page(scripted=True)
    page.log_in(me.id, me.password)
    page.expect_text(f"unread-u-{carol.id}", "4")  # old 3-5 and TRICKY; 29 and 99 are not chats
    fake.push(me, {"msgid": 98, "pos": "not a number", "html": TRICKY})
    page.open_conversation("u", carol.id)
    expect_texts(page, ["old 3", "old 4", "old 5", TRICKY])
    receipted = {i for frame in fake.requests(19) for i in frame["msg_ids"]}
    unknown = {obj["msg_id"] for obj in me.inbox if obj["msgid"] in (29, 99)}
    assert unknown <= receipted, (unknown, receipted)
    reads = [frame["pos"] for frame in fake.requests(22)]
    assert reads and reads[-1] == me.last_pos, (reads, me.last_pos)
    page.reload().log_in(me.id, me.password)
    assert fake.logins()[-1]["since"] == me.last_pos


def test_read_stops_below_a_conversation_still_unread_and_other_devices_follow(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me, carol, dave = fake.user("me"), fake.user("carol"), fake.user("dave")
    fake.chat(carol, me, "carol 1")  # pos 1
    fake.chat(carol, me, "carol 2")  # pos 2
    fake.chat(dave, me, "dave 1")  # pos 3
    pc, laptop = open_page(scripted=True), open_page(scripted=True)
    pc.log_in(me.id, me.password)
    laptop.log_in(me.id, me.password)
    laptop.expect_text(f"unread-u-{carol.id}", "2")
    laptop.expect_text(f"unread-u-{dave.id}", "1")

    # Dave's chat is read on the pc, carol's is not: "everything up to pos 3" would be untrue.
    pc.open_conversation("u", dave.id)
    pc.expect_message("dave 1")
    expect(pc.by(f"unread-u-{dave.id}")).to_have_count(0)
    pc.expect_text(f"unread-u-{carol.id}", "2")
    laptop.expect_text(f"unread-u-{dave.id}", "1")
    assert fake.requests(22) == []

    pc.open_conversation("u", carol.id)
    pc.expect_message("carol 2")
    expect(laptop.by(f"unread-u-{carol.id}")).to_have_count(0, timeout=WAIT_MS)
    expect(laptop.by(f"unread-u-{dave.id}")).to_have_count(0, timeout=WAIT_MS)
    assert [frame["pos"] for frame in fake.requests(22)] == [3]
    assert me.read_pos == 3

    # A message to oneself: one pos, shown once on the device that sent it and on the other.
    pc.open_chat_with(me.id)
    pc.send("note to self")
    laptop.open_conversation("u", me.id)
    sent(laptop, "note to self")
    sent(pc, "note to self")

    # A burst into the chat on screen: read as it comes, told in a few READs, not 50.
    pc.open_conversation("u", carol.id)
    reads_before = len(fake.requests(22))
    for n in range(50):
        fake.chat(carol, me, f"burst {n}")
    pc.expect_message("burst 49")
    pc.page.wait_for_timeout(1000)  # longer than the page waits to send a READ
    assert me.read_pos == me.last_pos
    assert 1 <= len(fake.requests(22)) - reads_before <= 5, fake.requests(22)
    expect(laptop.by(f"unread-u-{carol.id}")).to_have_count(0, timeout=WAIT_MS)


def test_history_pages_fill_a_conversation_older_than_the_sync_at_login(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me, carol, dave = fake.user("me"), fake.user("carol"), fake.user("dave")
    older = [f"carol {n}" for n in range(1, 76)]
    for text in older:
        fake.chat(carol, me, text)
    for n in range(200):
        fake.chat(dave, me, f"dave {n}")
    me.read_pos = me.last_pos
    page = open_page(scripted=True)
    page.log_in(me.id, me.password)
    expect(page.by(f"conversation-u-{dave.id}")).to_be_visible(timeout=WAIT_MS)
    expect(page.by(f"conversation-u-{carol.id}")).to_have_count(0)  # before the recent window
    page.open_chat_with(carol.id)
    expect_texts(page, older[-30:])
    page.scroll_messages_to_top()
    expect_texts(page, older[-60:])
    page.by("older-button").click()  # the button does the same
    expect_texts(page, older)
    expect(page.by("older-button")).to_be_hidden(timeout=WAIT_MS)
    befores = [frame.get("before") for frame in fake.requests(21)]
    assert befores == [None, 46, 16], befores
    page.reload().log_in(me.id, me.password)  # the list remembers carol; HISTORY fills it
    page.open_conversation("u", carol.id)
    expect_texts(page, older[-30:])


def test_a_new_page_catches_up_on_at_most_5000_objects_and_remembers_100_chats(
    fake: FakeInbox, open_page: OpenPage
) -> None:
    me = fake.user("me")
    people = [fake.user(f"p{n}") for n in range(101)]
    for person in people:  # 101 conversations, then 5,899 unread from the last one
        fake.chat(person, me, f"hi from {person.name}")
    for n in range(5899):
        fake.chat(people[-1], me, f"more {n}")
    assert me.last_pos == 6000
    page = open_page(scripted=True)
    page.log_in(me.id, me.password)
    last = people[-1]
    page.expect_text(f"unread-u-{last.id}", "5000")  # pos 1,001-6,000: the newest 5,000
    syncs = [frame["since"] for frame in fake.requests(20)]
    assert syncs == list(range(1000, 6000, 200)), syncs
    expect(page.by(f"conversation-u-{people[0].id}")).to_have_count(0)  # before the window

    page.open_chat_with(people[0].id)  # the oldest: its HISTORY still has it
    page.expect_message("hi from p0")
    saved = f"JSON.parse(localStorage.getItem('chatserver.conversations.{me.id}') || '[]')"
    page.page.wait_for_function(f"() => {saved}.some((c) => c.id === {people[0].id})")
    for person in people[1:-1]:  # 99 more, each with a newer message than p0's
        page.open_chat_with(person.id)
    page.expect_message(f"hi from {people[-2].name}")
    # The oldest of the 101 is the one forgotten.
    page.page.wait_for_function(
        f"() => {saved}.length === 100 && !{saved}.some((c) => c.id === {people[0].id})"
    )
