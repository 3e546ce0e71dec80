"""The web page's group administration, blocking and account, in a real headless Chromium
against a real `chatserver serve --ws-port` (PROTOCOL.md Version 2: "Groups that can be run",
"People who can protect themselves").

An admin kicks a member who is watching the group: the member's page says so at once and can no
longer send there. Roles, renaming and dissolving show on every member's page; a user blocks a
stranger from the page and unblocks them; a password is changed and an account deleted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.integration import test_web_browser as web_browser
from tests.integration import web_helpers
from tests.integration.conftest import Chat, User, unique_name
from tests.integration.test_web_browser import OpenPage
from tests.integration.web_helpers import CHROMIUM, WAIT_MS, ChatPage, cluster_pages

# The fixtures the browser tests share, and the page opener of test_web_browser.
browser, chat, web = web_helpers.browser, web_helpers.chat, web_helpers.web
open_page = web_browser.open_page

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def two_in_a_group(open_page: OpenPage) -> tuple[ChatPage, ChatPage, User, User, int]:
    """A creator's page and a member's page, both on the group, the member's name known to
    the creator's page (by a message)."""
    boss, member = open_page(), open_page()
    boss_name = unique_name("boss")
    boss_user = User(boss.register(boss_name, "pw-boss"), boss_name, "pw-boss")
    member_name = unique_name("memb")
    member_user = User(member.register(member_name, "pw-memb"), member_name, "pw-memb")
    group_id = boss.create_group(unique_name("g"))
    member.join_group(group_id)
    member.open_conversation("g", group_id)
    member.send("hello everybody")
    boss.expect_message("hello everybody")
    # the GROUP_EVENT names nobody: the line gets the member's name once the page has seen it
    boss.expect_message(f"{member_name} joined the group.")
    boss.by("group-members").locator("summary").first.click()
    expect(boss.by(f"member-{member_user.id}")).to_contain_text(member_name, timeout=WAIT_MS)
    return boss, member, boss_user, member_user, group_id


def test_an_admin_kicks_a_member_who_is_watching_the_group(open_page: OpenPage) -> None:
    boss, member, boss_user, member_user, _ = two_in_a_group(open_page)
    expect(member.by("message-input")).to_be_enabled(timeout=WAIT_MS)

    title = member.by("conversation-title").inner_text()
    started = time.monotonic()
    boss.by(f"kick-{member_user.id}").click()
    expect(boss.by("group-confirm-text")).to_contain_text(member_user.name, timeout=WAIT_MS)
    boss.by("group-confirm-yes").click()

    expect(member.by("group-kicked-notice")).to_be_visible(timeout=WAIT_MS)
    print(f"kick click to the member's page showing it: {time.monotonic() - started:.3f} s")
    member.expect_message(f"You were removed from the group by {boss_user.name}.")
    expect(member.by("message-input")).to_be_disabled(timeout=WAIT_MS)
    expect(member.by("send-button")).to_be_disabled(timeout=WAIT_MS)
    member.expect_text("composer-closed", "You are not a member of this group.")
    expect(member.by("leave-group-button")).to_be_hidden(timeout=WAIT_MS)
    # the conversation stays readable, under the group's name
    member.expect_message("hello everybody")
    member.expect_text("conversation-title", title)

    expect(boss.by(f"member-{member_user.id}")).to_have_count(0, timeout=WAIT_MS)
    boss.expect_message(f"{member_user.name} was removed from the group by you.")
    boss.send("after the kick")
    time.sleep(0.5)  # what the boss sends no longer reaches the member
    expect(member.message("after the kick")).to_have_count(0)


def test_roles_renaming_and_dissolving_show_on_every_members_page(
    open_page: OpenPage,
) -> None:
    boss, member, boss_user, member_user, group_id = two_in_a_group(open_page)
    expect(member.by("group-settings")).to_be_hidden()
    expect(member.by(f"kick-{boss_user.id}")).to_have_count(0)  # a member acts on nobody

    boss.by(f"make-admin-{member_user.id}").click()
    member.expect_text(f"member-role-{member_user.id}", "admin")
    boss.expect_text(f"member-role-{member_user.id}", "admin")
    # an admin may rename the group, and still may not act on the creator
    new_name = f"<b>{unique_name('renamed')}</b>"
    member.by("group-members").locator("summary").first.click()
    member.by("group-settings").locator("summary").click()
    member.by("rename-group-name").fill(new_name)
    member.by("rename-group-button").click()
    boss.expect_text("conversation-title", new_name)
    boss.expect_text(f"group-name-{group_id}", new_name)
    expect(member.by(f"kick-{boss_user.id}")).to_have_count(0)
    expect(member.by("dissolve-group-button")).to_be_hidden()

    # muted for a day, as the boss picked (the event says until when)
    boss.by(f"mute-for-{member_user.id}").select_option("1 day")
    boss.by(f"mute-{member_user.id}").click()
    member.expect_text(f"member-role-{member_user.id}", "admin · muted")
    tomorrow = member.page.evaluate(
        "new Date(Date.now() + 86400000).toLocaleString().split(',')[0]"
    )
    expect(member.by("messages")).to_contain_text(f"until {tomorrow}", timeout=WAIT_MS)
    member.by("message-input").fill("may I speak?")
    member.by("message-input").press("Enter")
    refused = member.by("messages").locator(".message.mine").filter(has_text="may I speak?")
    expect(refused.get_by_test_id("message-status")).to_contain_text("muted", timeout=WAIT_MS)
    boss.by(f"unmute-{member_user.id}").click()
    member.expect_text(f"member-role-{member_user.id}", "admin")
    member.send("thanks")

    # the creator hands the group over: the roles swap, and so do the buttons
    boss.by(f"transfer-{member_user.id}").click()
    expect(boss.by("group-confirm-text")).to_contain_text(member_user.name, timeout=WAIT_MS)
    boss.by("group-confirm-yes").click()
    member.expect_text(f"member-role-{member_user.id}", "creator")
    member.expect_text(f"member-role-{boss_user.id}", "admin")
    boss.expect_text(f"member-role-{member_user.id}", "creator")
    expect(boss.by(f"kick-{member_user.id}")).to_have_count(0, timeout=WAIT_MS)
    expect(member.by(f"kick-{boss_user.id}")).to_have_count(1, timeout=WAIT_MS)
    expect(boss.by("dissolve-group-button")).to_be_hidden()

    member.by("dissolve-group-button").click()
    expect(member.by("group-confirm-text")).to_contain_text("Dissolve", timeout=WAIT_MS)
    member.by("group-confirm-yes").click()
    member.expect_text("composer-closed", "You are not a member of this group.")
    boss.expect_text("composer-closed", "You are not a member of this group.")
    expect(boss.by("notices")).to_contain_text("was dissolved by", timeout=WAIT_MS)
    expect(member.by(f"group-{group_id}")).to_have_count(0, timeout=WAIT_MS)
    expect(boss.by(f"group-{group_id}")).to_have_count(0, timeout=WAIT_MS)


def test_a_user_blocks_a_stranger_from_the_page_and_unblocks_them(
    chat: Chat, open_page: OpenPage
) -> None:
    carol = chat.user("carol")
    tcp = chat.online(carol)
    page = open_page()
    me = page.register(unique_name("dana"), "pw-dana")
    tcp.ok({"msgid": 6, "toid": me, "msg": "buy my stuff"})
    page.open_conversation("u", carol.id)
    page.expect_message("buy my stuff")

    page.by("block-button").click()
    expect(page.by(f"blocked-{carol.id}")).to_contain_text(carol.name, timeout=WAIT_MS)
    page.expect_text("block-button", "Unblock")
    tcp.err({"msgid": 6, "toid": me, "msg": "buy my stuff!!"}, 12)
    tcp.ok({"msgid": 7, "friendid": me})  # errno 0, and it reaches nobody
    time.sleep(0.3)
    expect(page.by(f"request-{carol.id}")).to_have_count(0)

    page.by(f"unblock-{carol.id}").click()
    expect(page.by(f"blocked-{carol.id}")).to_have_count(0, timeout=WAIT_MS)
    page.expect_text("block-button", "Block")
    tcp.ok({"msgid": 6, "toid": me, "msg": "sorry"})
    page.expect_message("sorry")


def test_a_user_changes_the_password_from_the_page(open_page: OpenPage) -> None:
    page = open_page()
    name = unique_name("erin")
    me = page.register(name, "old-pw")
    other_device = open_page()
    other_device.log_in(me, "old-pw")
    page.by("account").locator("summary").click()
    page.by("old-password").fill("wrong")
    page.by("new-password").fill("new-pw")
    page.by("password-button").click()
    expect(page.by("notices")).to_contain_text("The password is wrong.", timeout=WAIT_MS)
    page.by("old-password").fill("old-pw")
    page.by("password-button").click()
    expect(page.by("notices")).to_contain_text("Password changed.", timeout=WAIT_MS)
    # the user's other devices are logged out, and told why
    expect(other_device.by("kicked-notice")).to_contain_text(
        "the password was changed", timeout=WAIT_MS
    )
    expect(other_device.by("login-view")).to_be_visible(timeout=WAIT_MS)
    expect(page.by("chat-view")).to_be_visible()
    page.log_out()
    page.log_in(me, "new-pw")


def test_a_user_deletes_the_account_after_typing_the_password(
    chat: Chat, open_page: OpenPage
) -> None:
    page = open_page()
    name = unique_name("fay")
    page.register(name, "pw-fay")
    page.by("account").locator("summary").click()
    page.by("delete-password").fill("not it")
    page.by("delete-account-button").click()
    expect(page.by("notices")).to_contain_text("The password is wrong.", timeout=WAIT_MS)
    expect(page.by("chat-view")).to_be_visible()
    page.by("delete-password").fill("pw-fay")
    page.by("delete-account-button").click()
    expect(page.by("deleted-notice")).to_be_visible(timeout=WAIT_MS)
    expect(page.by("login-view")).to_be_visible(timeout=WAIT_MS)
    # the name is free again
    chat.register(name, "someone else")


def test_a_kick_reaches_a_member_watching_on_another_node_of_a_cluster(
    tmp_path: Path, browser: Browser
) -> None:
    """The creator's page is served by node 1, the member's by node 2: the GROUP_EVENT crosses
    the bus, and the member's page closes its composer."""
    with cluster_pages(browser, tmp_path) as (_, boss, member):
        boss.register(unique_name("boss"), "pw-boss")
        member_id = member.register(unique_name("memb"), "pw-memb")
        group_id = boss.create_group(unique_name("g"))
        member.join_group(group_id)
        member.open_conversation("g", group_id)
        member.send("hello from node 2")
        boss.expect_message("hello from node 2")
        boss.by("group-members").locator("summary").first.click()
        boss.by(f"kick-{member_id}").click()
        boss.by("group-confirm-yes").click()
        expect(member.by("group-kicked-notice")).to_be_visible(timeout=WAIT_MS)
        expect(member.by("message-input")).to_be_disabled(timeout=WAIT_MS)
        expect(boss.by(f"member-{member_id}")).to_have_count(0, timeout=WAIT_MS)
