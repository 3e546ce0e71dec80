"""The web page in a real headless Chromium, against a real `chatserver serve --ws-port`.

Browser users chat with each other, with a raw TCP user and with a `chatserver client` process,
befriend and unfriend, share a group, see presence, messages that waited, a kick, a wrong
password, a server restart, and a phone-sized screen. (docs/web-client.png comes from
`python -m tests.integration.web_helpers`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.integration import web_helpers
from tests.integration.conftest import Chat, User, unique_name
from tests.integration.test_terminal_sessions import Terminal
from tests.integration.test_terminal_sessions import register as register_in_terminal
from tests.integration.web_helpers import CHROMIUM, WAIT_MS, ChatPage, WebServer, new_context

# The fixtures the browser tests share.
browser, chat, web = web_helpers.browser, web_helpers.chat, web_helpers.web

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# Text that must arrive exactly as typed: markup, quotes, Chinese, emoji.
TRICKY = '<script>alert("x")</script> & \'quotes\' 你好 😀'

UNKNOWN_ID = 2_000_000_000  # no user or group has it

OpenPage = Callable[..., ChatPage]


@pytest.fixture
def open_page(browser: Browser, web: WebServer) -> Iterator[OpenPage]:
    """Opens the page in a fresh browser context (its own cookies, its own socket)."""
    pages: list[ChatPage] = []

    def open_(width: int = 1000, height: int = 700, url: str | None = None) -> ChatPage:
        page = ChatPage(new_context(browser, width, height).new_page(), url or web.url)
        pages.append(page)
        return page.open()

    yield open_
    for page in pages:
        page.assert_healthy()
        page.page.context.close()


def test_two_browser_users_befriend_chat_and_share_a_group(open_page: OpenPage) -> None:
    alice, bob = open_page(), open_page()
    alice_name = f'<b>"Zoë"</b> 李😀 {unique_name("a")}'
    alice_id = alice.register(alice_name, "pw-alice")
    bob_id = bob.register(unique_name("bob"), "pw-bob")
    alice.expect_text("my-name", alice_name)  # shown as text, not markup

    alice.add_friend(bob_id)
    request = bob.by(f"request-{alice_id}")
    expect(request).to_contain_text(alice_name, timeout=WAIT_MS)
    bob.by(f"accept-{alice_id}").click()
    expect(request).to_have_count(0, timeout=WAIT_MS)
    alice.expect_friend_state(bob_id, "online")
    bob.expect_friend_state(alice_id, "online")
    bob.expect_text(f"friend-name-{alice_id}", alice_name)

    alice.by(f"friend-chat-{bob_id}").click()
    alice.send(TRICKY)
    bob.expect_text(f"unread-u-{alice_id}", "1")
    bob.open_conversation("u", alice_id)
    bob.expect_message(TRICKY)
    expect(bob.by(f"unread-u-{alice_id}")).to_have_count(0, timeout=WAIT_MS)
    bob.send("hi alice, 收到")
    alice.expect_message("hi alice, 收到")

    group_name = f'<i>team</i> "{unique_name("g")}"'
    group_id = alice.create_group(group_name, "<b>plans</b> & 计划")
    alice.expect_text("group-desc", "<b>plans</b> & 计划")
    bob.join_group(group_id)
    bob.send("bob here in the group")
    alice.expect_message("bob here in the group")
    expect(alice.by(f"member-{bob_id}")).to_have_count(1, timeout=WAIT_MS)
    alice.send("welcome to the group 🎉")
    bob.expect_message("welcome to the group 🎉")


def test_a_tcp_user_and_a_browser_user_chat_both_ways(chat: Chat, open_page: OpenPage) -> None:
    carol = chat.user("carol")
    tcp = chat.online(carol, receipts=True)
    page = open_page()
    dave_name = unique_name("dave")
    dave = User(page.register(dave_name, "pw-dave"), dave_name, "pw-dave")

    tcp.ok({"msgid": 6, "toid": dave.id, "msg": TRICKY})
    page.expect_text(f"unread-u-{carol.id}", "1")
    expect(page.by(f"conversation-u-{carol.id}")).to_contain_text(carol.name, timeout=WAIT_MS)
    page.open_conversation("u", carol.id)
    page.expect_message(TRICKY)

    page.send("hello over TCP, 你好 😀")
    got = tcp.expect({"msgid": 6, "id": dave.id})
    assert got["msg"] == "hello over TCP, 你好 😀" and got["toid"] == carol.id, got

    # Dave logs in elsewhere as the page's device (a login on another device would not end
    # the page's session): the page says so, and does not log in again by itself.
    elsewhere = chat.client()
    elsewhere.login(dave, receipts=True, device=page.device())
    expect(page.by("kicked-notice")).to_be_visible(timeout=WAIT_MS)
    expect(page.by("login-view")).to_be_visible(timeout=WAIT_MS)
    assert elsewhere.ack is not None
    assert elsewhere.ack["offlinemsg"] == [], "the page receipted what it showed"
    elsewhere.assert_silent(1.0, pattern={"msgid": 15})


def test_messages_that_waited_are_shown_at_login(chat: Chat, open_page: OpenPage) -> None:
    carol = chat.user("carol")
    tcp = chat.online(carol)
    page = open_page()
    erin_name = unique_name("erin")
    erin_id = page.register(erin_name, "pw-erin")

    page.log_out()
    tcp.ok({"msgid": 6, "toid": erin_id, "msg": "while you were logged out"})
    page.log_in(erin_id, "pw-erin")
    page.expect_text(f"unread-u-{carol.id}", "1")
    page.open_conversation("u", carol.id)
    page.expect_message("while you were logged out")

    page.page.close()  # the tab goes away without logging out
    tcp.ok({"msgid": 6, "toid": erin_id, "msg": "while the page was closed"})
    tcp.ok({"msgid": 6, "toid": erin_id, "msg": "and one more"})
    again = open_page()
    again.log_in(erin_name, "pw-erin")
    again.expect_text(f"unread-u-{carol.id}", "2")
    again.open_conversation("u", carol.id)
    # Another browser is another device: it shows the whole conversation (the first message
    # read, the other two unread above), each message once.
    expect(again.messages()).to_have_text(
        ["while you were logged out", "while the page was closed", "and one more"],
        timeout=WAIT_MS,
    )


def test_the_page_shows_a_friend_going_offline_and_online(
    chat: Chat, open_page: OpenPage
) -> None:
    alice, bob = chat.users(2)
    ca, cb = chat.online_all(alice, bob)
    chat.befriend(ca, cb)
    ca.logout()
    cb.logout()
    page = open_page()
    page.log_in(alice.id, alice.password)
    page.expect_friend_state(bob.id, "offline")
    cb.login(bob)
    page.expect_friend_state(bob.id, "online")
    cb.close()  # the connection just drops
    page.expect_friend_state(bob.id, "offline")


def test_errors_read_as_sentences(chat: Chat, open_page: OpenPage) -> None:
    taken = chat.user("taken")
    page = open_page()
    page.fill_login(taken.name, "another password")
    page.by("register-button").click()
    expect(page.by("login-error")).to_contain_text("That name is already taken.", timeout=WAIT_MS)
    me = page.register(unique_name("errs"), "pw-errs")

    notices = page.by("notices")
    page.by("join-group-id").fill(str(UNKNOWN_ID))
    page.by("join-group-button").click()
    expect(notices).to_contain_text("No such group.", timeout=WAIT_MS)
    page.by("add-friend-id").fill(str(me))
    page.by("add-friend-button").click()
    expect(notices).to_contain_text("could not accept that", timeout=WAIT_MS)

    page.open_chat_with(UNKNOWN_ID)
    page.by("message-input").fill("anyone there?")
    page.by("message-input").press("Enter")
    expect(page.by("message-status")).to_contain_text("not sent: No such user.", timeout=WAIT_MS)


def test_wrong_password_and_a_server_restart(tmp_path: Path, open_page: OpenPage) -> None:
    web = WebServer(tmp_path)
    web.start()
    try:
        frank = Chat(web.current).user("frank")
        page = open_page(width=390, height=844, url=web.url)  # the status line fits a phone

        # With the keyboard only: type, Tab, type, Enter.
        page.by("login-who").focus()
        page.page.keyboard.type(str(frank.id))
        page.page.keyboard.press("Tab")
        page.page.keyboard.type("not the password")
        page.page.keyboard.press("Enter")
        page.expect_text(
            "login-error", "Wrong name, id or password. (server: id or password is invalid!)"
        )
        page.log_in(frank.id, frank.password)

        web.stop()
        expect(page.status).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        expect(page.status).to_contain_text("reconnecting", timeout=WAIT_MS)
        expect(page.by("chat-view")).to_be_visible()
        assert page.page.evaluate("document.documentElement.scrollWidth") <= 390
        web.start()
        page.expect_logged_in()  # back, and logged in again by itself

        chat = Chat(web.current)
        carol = chat.user("carol")
        chat.online(carol).ok({"msgid": 6, "toid": frank.id, "msg": "after the restart"})
        page.open_conversation("u", carol.id)
        page.expect_message("after the restart")
        chat.close_all()
    finally:
        web.close()


def test_a_phone_sized_screen(chat: Chat, open_page: OpenPage) -> None:
    carol = chat.user("carol")
    tcp = chat.online(carol)
    page = open_page(width=390, height=844)
    for testid in ("login-who", "login-password", "login-button", "register-button"):
        expect(page.by(testid)).to_be_in_viewport(timeout=WAIT_MS)
    phone_id = page.register(unique_name("phone"), "pw-phone")
    for testid in ("logout-button", "new-chat-id", "add-friend-id", "join-group-id"):
        expect(page.by(testid)).to_be_visible(timeout=WAIT_MS)
    page.by("create-group-button").scroll_into_view_if_needed()
    expect(page.by("create-group-button")).to_be_in_viewport(timeout=WAIT_MS)
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 390

    page.open_chat_with(carol.id)
    expect(page.by("add-friend-id")).to_be_hidden()  # one pane at a time
    for testid in ("back-button", "message-input", "send-button"):
        expect(page.by(testid)).to_be_in_viewport(timeout=WAIT_MS)
    page.send("from a phone 📱")
    tcp.expect({"msgid": 6, "id": phone_id, "msg": "from a phone 📱"})
    tcp.ok({"msgid": 6, "toid": phone_id, "msg": "reply to the phone"})
    page.expect_message("reply to the phone")
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 390

    page.by("back-button").click()
    expect(page.by(f"conversation-u-{carol.id}")).to_be_in_viewport(timeout=WAIT_MS)
    expect(page.by("message-input")).to_be_hidden()


def test_removing_a_friend_ends_it_on_both_sides(open_page: OpenPage) -> None:
    alice, bob = open_page(), open_page()
    alice_name, bob_name = unique_name("alice"), f'<b>"Bob"</b> {unique_name("b")}'
    alice_id = alice.register(alice_name, "pw-alice")
    bob_id = bob.register(bob_name, "pw-bob")
    alice.add_friend(bob_id)
    bob.by(f"accept-{alice_id}").click()
    alice.expect_friend_state(bob_id, "online")
    alice.by(f"friend-chat-{bob_id}").click()
    alice.send("before we part")
    bob.open_conversation("u", alice_id)
    bob.expect_message("before we part")

    # With the keyboard alone: Enter asks, the focus lands on Cancel, Escape closes it again.
    remove = alice.by(f"remove-friend-{bob_id}")
    remove.focus()
    remove.press("Enter")
    expect(alice.by(f"removal-{bob_id}")).to_contain_text(f"Remove {bob_name}?", timeout=WAIT_MS)
    expect(alice.by(f"cancel-remove-{bob_id}")).to_be_focused(timeout=WAIT_MS)
    alice.page.keyboard.press("Escape")
    expect(alice.by(f"removal-{bob_id}")).to_have_count(0, timeout=WAIT_MS)
    expect(remove).to_be_focused(timeout=WAIT_MS)
    alice.expect_friend_state(bob_id, "online")  # still friends

    remove.press("Enter")
    alice.page.keyboard.press("Shift+Tab")
    expect(alice.by(f"confirm-remove-{bob_id}")).to_be_focused(timeout=WAIT_MS)
    alice.page.keyboard.press("Enter")
    expect(alice.by(f"friend-{bob_id}")).to_have_count(0, timeout=WAIT_MS)
    expect(alice.by("notices")).to_contain_text(
        f"{bob_name} is no longer your friend.", timeout=WAIT_MS
    )
    expect(alice.by("friends-empty")).to_be_visible(timeout=WAIT_MS)
    expect(alice.by("add-friend-id")).to_be_focused(timeout=WAIT_MS)
    # The conversation stays, under bob's name, and chat still works (no friendship needed).
    expect(alice.by(f"conversation-u-{bob_id}")).to_contain_text(bob_name, timeout=WAIT_MS)
    alice.expect_text("conversation-title", bob_name)
    alice.expect_message("before we part")
    alice.send("still here")
    bob.expect_message("still here")

    # Nothing is pushed to bob: he sees it at his next login.
    bob.log_out()
    bob.log_in(bob_id, "pw-bob")
    expect(bob.by(f"friend-{alice_id}")).to_have_count(0, timeout=WAIT_MS)
    expect(bob.by("friends-empty")).to_be_visible(timeout=WAIT_MS)
    alice.log_out()
    alice.log_in(alice_id, "pw-alice")
    expect(alice.by("friends-empty")).to_be_visible(timeout=WAIT_MS)


def test_a_removal_that_cannot_reach_the_server_says_so(
    tmp_path: Path, open_page: OpenPage
) -> None:
    web = WebServer(tmp_path)
    web.start()
    try:
        chat = Chat(web.current)
        alice, bob = chat.users(2)
        chat.befriend(*chat.online_all(alice, bob))
        chat.close_all()
        page = open_page(url=web.url)
        page.log_in(alice.id, alice.password)
        page.by(f"remove-friend-{bob.id}").click()
        web.stop()
        expect(page.status).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        page.by(f"confirm-remove-{bob.id}").click()
        expect(page.by("notices")).to_contain_text(
            f"Removing {bob.name} failed: Not connected.", timeout=WAIT_MS
        )
        expect(page.by(f"friend-{bob.id}")).to_have_count(1)
        expect(page.by(f"remove-friend-{bob.id}")).to_be_focused(timeout=WAIT_MS)

        web.start()
        page.expect_logged_in()
        page.remove_friend(bob.id)
    finally:
        web.close()


def test_a_terminal_user_and_two_browser_users(web: WebServer, open_page: OpenPage) -> None:
    """`chatserver client` over TCP and two pages over WebSocket, on one server."""
    assert web.current.port is not None
    term = Terminal(web.current.port)
    try:
        alice, bob = open_page(), open_page()
        term_name = unique_name("term")
        alice_name, bob_name = unique_name("alice"), unique_name("bob")
        term_id = register_in_terminal(term, term_name)
        term.type("1", str(term_id), "secret")
        term.wait_for(f"id: {term_id} name: {term_name}")
        alice_id = alice.register(alice_name, "pw-alice")
        bob_id = bob.register(bob_name, "pw-bob")

        # The terminal asks, the page accepts.
        term.type(f"addfriend:{alice_id}")
        term.wait_for(f"friend request sent to [{alice_id}]")
        expect(alice.by(f"request-{term_id}")).to_contain_text(term_name, timeout=WAIT_MS)
        alice.by(f"accept-{term_id}").click()
        term.wait_for(f"[{alice_id}] {alice_name} accepted your friend request")
        alice.expect_friend_state(term_id, "online")

        # One-to-one, both ways.
        term.type(f"chat:{alice_id}:from the terminal, 你好 😀")
        alice.expect_text(f"unread-u-{term_id}", "1")
        alice.open_conversation("u", term_id)
        alice.expect_message("from the terminal, 你好 😀")
        alice.send("from the browser: <b>hi</b>")
        term.wait_for(f"[{alice_id}] {alice_name} said: from the browser: <b>hi</b>")

        # Bob's group: the terminal and alice join, and all three talk.
        group_name = unique_name("trio")
        group_id = bob.create_group(group_name, "three clients")
        term.type(f"addgroup:{group_id}")
        term.wait_for(f"joined group [{group_id}]")
        alice.join_group(group_id)
        term.type(f"groupchat:{group_id}:terminal to the group")
        bob.expect_message("terminal to the group")
        alice.expect_message("terminal to the group")
        alice.send("alice to the group")
        bob.expect_message("alice to the group")
        line = term.wait_for(f"[{alice_id}] {alice_name} said: alice to the group")
        assert line.startswith(f"group[{group_id}] "), line
        bob.send("bob to the group")
        alice.expect_message("bob to the group")
        line = term.wait_for(f"[{bob_id}] {bob_name} said: bob to the group")
        assert line.startswith(f"group[{group_id}] "), line
        expect(bob.by(f"member-{term_id}")).to_have_count(1, timeout=WAIT_MS)

        # Alice removes the terminal user: the terminal is told at once (FRIEND_REMOVED,
        # Version 2), and the next login shows it too.
        alice.remove_friend(term_id)
        term.wait_for(f"[{alice_id}] is no longer your friend")
        alice.open_conversation("u", term_id)  # the history stays
        alice.expect_message("from the terminal, 你好 😀")
        alice.expect_text("conversation-title", term_name)
        term.type("loginout")
        term.wait_for("logged out")
        term.type("1", str(term_id), "secret")
        term.wait_for(f"id: {term_id} name: {term_name}")
        term.wait_for("friends")
        assert term.seen[-1] == "friends: none", term.seen[-1]
        term.wait_for(f"[{group_id}] {group_name}: three clients")
        term.wait_for("=" * 50)
    finally:
        assert term.close() == 0
